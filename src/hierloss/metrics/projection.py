"""Post-hoc projection of scores onto hierarchy-consistent outputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierloss._validation import validating
from hierloss.hierarchy import Hierarchy
from hierloss.metrics._inputs import as_tensor, check_no_nan
from hierloss.propagation import max_over_descendants, min_over_ancestors

__all__ = ["coherent"]


def coherent(preds: Any, hierarchy: Hierarchy, method: str = "max", validate_args: bool = True) -> Any:
    """Make scores coherent with the hierarchy: every parent scores at least as high as each of its children.

    * ``'max'``: each label becomes the max over itself and its descendants (C-HMCNN's max-constraint module);
      never lowers a score.
    * ``'min'``: each label becomes the min over itself and its ancestors; never raises a score.

    Both are exact on DAGs and leave no violation at any threshold. ``'max'`` is
    :func:`hierloss.functional.max_over_descendants` (the one implementation, also behind ``MaxConstraint`` and
    ``Hierarchy.propagate``) and ``'min'`` :func:`~hierloss.functional.min_over_ancestors`, applied to any array.
    Both are operations of the propagation engine (:mod:`hierloss.propagation`): ``O(N·(C + E))`` time and memory
    whatever the depth, and no ``(N, C, C)`` tensor (measurements in ``docs/benchmarks.md``).

    Args:
        preds: ``(N, C)`` or ``(C,)`` scores (probabilities or logits: both methods commute with any increasing
            map such as the sigmoid). A NumPy array gives a NumPy array back; tensors keep device and gradient.
        hierarchy: the label hierarchy.
        method: ``'max'`` or ``'min'``.
        validate_args: refuse NaN scores (a ``ValueError`` naming the label and the count): a NaN would spread to
            every ancestor (``'max'``) or descendant (``'min'``). The check reads the scores back to the host, a
            GPU synchronisation; with ``False`` nothing is read back and NaN spreads. Under ``torch.compile`` and
            ``torch.export`` the check is skipped.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> coherent(torch.tensor([[0.2, 0.7]]), h)
        tensor([[0.7000, 0.7000]])
        >>> coherent(torch.tensor([[0.2, 0.7]]), h, method="min")
        tensor([[0.2000, 0.2000]])
    """
    if method not in ("max", "min"):
        raise ValueError(f"method must be 'max' or 'min', got {method!r}")
    values = as_tensor(preds, "preds")
    if values.ndim not in (1, 2) or values.shape[-1] != hierarchy.num_labels:
        raise ValueError(f"Expected `preds` of shape (N, {hierarchy.num_labels}) or ({hierarchy.num_labels},), got "
                         f"{tuple(values.shape)}")
    if validating(validate_args):  # skipped while torch.compile / torch.export trace: they cannot read values
        check_no_nan(values.reshape(math.prod(values.shape[:-1]), hierarchy.num_labels), "preds", hierarchy,
                     why="it would spread to every ancestor ('max') or descendant ('min')")
    out = max_over_descendants(values, hierarchy) if method == "max" else min_over_ancestors(values, hierarchy)
    return out.numpy() if isinstance(preds, np.ndarray) else out
