"""C-HMCNN's max-constraint module: the max over descendants, as an inference layer."""

from __future__ import annotations

from torch import Tensor

from hierloss._hierarchy_module import HierarchyModule
from hierloss.hierarchy import Hierarchy
from hierloss.propagation import closure_max

__all__ = ["MaxConstraint"]


class MaxConstraint(HierarchyModule):
    """C-HMCNN's max-constraint module: each label's score becomes the max over itself and its descendants.

    Use it at inference on the sigmoid outputs of a head trained with :class:`MCLoss`:
    ``probs = MaxConstraint(hierarchy)(torch.sigmoid(logits))``. The output is coherent (``out[a] ≥ out[d]`` for
    every ancestor ``a`` of ``d``). It works on any monotone score (probabilities, logits, 0/1 labels) and is
    differentiable (the gradient goes to the element holding the max; among ties, the one with the smallest
    column index). Functional twin:
    :func:`hierloss.functional.max_over_descendants`.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.

    Shape:
        input ``(..., C)``; output the same shape, dtype and device.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b"], "b": ["c"]})
        >>> MaxConstraint(h)(torch.tensor([[0.1, 0.2, 0.9]]))
        tensor([[0.9000, 0.9000, 0.9000]])
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__(hierarchy)
        self._register_plan("plan", "descendants")

    def forward(self, input: Tensor) -> Tensor:
        """Max over self and descendants of ``input`` (``(..., C)`` scores)."""
        self._check_width(input)
        return closure_max(input, self._level_plan())
