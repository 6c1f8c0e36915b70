"""The chain rule: marginal probabilities from conditional logits, coherent by construction.

A head trained with :class:`~hierloss.losses.ConditionalBCELoss` outputs ``z_c`` with ``σ(z_c) = P(c | parents of
c positive)``. The marginal of a label is then

* on a tree, the product of the conditionals along its path from the root:
  ``P(c) = σ(z_c) · P(parent(c))``;
* on a DAG, ``P(c) = σ(z_c) · min over the parents p of P(p)``. With several parents the exact marginal needs
  their joint distribution, which the model does not give; ``P(all parents) ≤ min_p P(p)`` holds for any joint, so
  this is the tightest upper bound that needs no independence assumption, and it keeps every label at or below
  each of its parents (``σ(z_c) ≤ 1``). On a tree it is the product along the path.

The marginals are computed by the propagation engine (:func:`hierloss.propagation.chain_rule_marginals`) in log
space, level by level from the roots: ``O(N·(C + E))`` work and memory, no host synchronisation, differentiable (a
written backward).
"""

from __future__ import annotations

from torch import Tensor

from hierloss._hierarchy_module import HierarchyModule
from hierloss.hierarchy import Hierarchy, check_hierarchy
from hierloss.propagation import LevelPlan, chain_rule_marginals

__all__ = ["ChainRule", "chain_rule_probs"]


def chain_rule_probs(input: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Marginal probabilities from conditional logits: ``P(c) = σ(z_c) · min over parents p of P(p)``.

    Args:
        input: ``(..., C)`` logits of ``P(label | its parents positive)`` (e.g. trained with
            :func:`~hierloss.functional.conditional_bce_loss`); roots' logits are their marginals'.
        hierarchy: the label hierarchy; its level plan is built on every call (:class:`ChainRule` keeps it in
            buffers).

    Returns:
        ``(..., C)`` probabilities with ``out[..., child] <= out[..., parent]`` for every edge; on a tree, the
        product of the conditionals along each label's path.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b"], "b": ["c"]})
        >>> chain_rule_probs(torch.tensor([[0.0, 0.0, 0.0]]), h)  # 0.5, 0.5 · 0.5, 0.5 · 0.5 · 0.5
        tensor([[0.5000, 0.2500, 0.1250]])
    """
    check_hierarchy(hierarchy)
    return chain_rule_marginals(input, LevelPlan.build(hierarchy, "parents", input.device))


class ChainRule(HierarchyModule):
    """The chain rule as a layer: marginal probabilities from conditional logits (see :func:`chain_rule_probs`).

    Use it at inference on a head trained with :class:`~hierloss.losses.ConditionalBCELoss`:
    ``probs = ChainRule(hierarchy)(logits)``, coherent by construction. The level plan is kept in buffers, so
    ``forward`` never synchronises with the host.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.

    Shape:
        input ``(..., C)`` logits; output the same shape, probabilities.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b", "c"]})
        >>> ChainRule(h)(torch.tensor([[0.0, 0.0, 2.0]])).round(decimals=4)
        tensor([[0.5000, 0.2500, 0.4404]])
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__(hierarchy)
        self._register_plan("plan", "parents")

    def forward(self, input: Tensor) -> Tensor:
        """Marginal probabilities of ``input`` (``(..., C)`` conditional logits)."""
        self._check_width(input)
        return chain_rule_marginals(input, self._level_plan())
