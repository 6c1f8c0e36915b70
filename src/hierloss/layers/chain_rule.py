"""The chain rule: marginal probabilities from conditional logits, coherent by construction.

A head trained with :class:`~hierloss.losses.ConditionalBCELoss` outputs ``z_c`` with ``σ(z_c) = P(c | parents of
c positive)``. The marginal of a label is then

* on a tree, the product of the conditionals along its path from the root:
  ``P(c) = σ(z_c) · P(parent(c))``;
* on a DAG, ``P(c) = σ(z_c) · min over the parents p of P(p)``. With several parents the exact marginal needs
  their joint distribution, which the model does not give; ``P(all parents) ≤ min_p P(p)`` holds for any joint, so
  this is the tightest upper bound that needs no independence assumption, and it keeps every label at or below
  each of its parents (``σ(z_c) ≤ 1``). On a tree it is the product along the path.

The marginals are computed level by level from the roots (one gather and one ``scatter_reduce`` per depth), as
the propagation kernel does: ``O(N·E)`` work, no host synchronisation, differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hierloss.hierarchy import Hierarchy
from hierloss.layers._plan_module import PlanModule
from hierloss.propagation import PropagationPlan

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
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"Expected a Hierarchy, got {type(hierarchy).__name__}")
    _check_width(input, hierarchy.num_labels)
    return _chain_rule(input, PropagationPlan.downward(hierarchy, input.device))


def _check_width(input: Tensor, num_labels: int) -> None:
    if input.ndim == 0 or input.shape[-1] != num_labels:
        raise ValueError(f"Expected `input` of shape (..., {num_labels}), got {tuple(input.shape)}")


def _chain_rule(input: Tensor, plan: PropagationPlan) -> Tensor:
    """The chain rule over a downward plan (edges grouped by the child's depth: parents are final before)."""
    conditional = torch.sigmoid(input)
    out = conditional
    lead = input.shape[:-1]
    start = 0
    for size in plan.sizes:
        parents, children = plan.source[start:start + size], plan.target[start:start + size]
        start += size
        # for each edge of this depth: P(parent) · P(child | parents); the child takes the minimum over its edges
        candidates = out.index_select(-1, parents) * conditional.index_select(-1, children)
        out = out.scatter_reduce(-1, children.expand(*lead, size), candidates, reduce="amin", include_self=False)
    return out


def _log_chain_rule(input: Tensor, plan: PropagationPlan) -> tuple[Tensor, Tensor]:
    """``(log P(c), log(1 − P(c)))`` of the chain rule's marginals, both computed in log space.

    With ``m`` the smallest parent marginal, ``P(c) = σ(z)·m`` and ``1 − P(c) = σ(−z) + σ(z)·(1 − m)``, so per edge
    ``log P = log m + logσ(z)`` and ``log(1 − P) = logaddexp(logσ(−z), logσ(z) + log(1 − m))``; the child keeps the
    edge with the smallest ``P``, which is the one with the largest ``1 − P``. Neither needs a clamp: both stay
    finite (and so do their gradients) where ``P(c)`` rounds to 0 or 1.
    """
    log_cond, log_not = F.logsigmoid(input), F.logsigmoid(-input)
    log_p, log_q = log_cond, log_not
    lead = input.shape[:-1]
    start = 0
    for size in plan.sizes:
        parents, children = plan.source[start:start + size], plan.target[start:start + size]
        start += size
        index = children.expand(*lead, size)
        child_cond = log_cond.index_select(-1, children)
        candidates_p = log_p.index_select(-1, parents) + child_cond
        candidates_q = torch.logaddexp(log_not.index_select(-1, children), child_cond + log_q.index_select(-1, parents))
        log_p = log_p.scatter_reduce(-1, index, candidates_p, reduce="amin", include_self=False)
        log_q = log_q.scatter_reduce(-1, index, candidates_q, reduce="amax", include_self=False)
    return log_p, log_q


class ChainRule(PlanModule):
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
        super().__init__(hierarchy, direction="down")

    def forward(self, input: Tensor) -> Tensor:
        """Marginal probabilities of ``input`` (``(..., C)`` conditional logits)."""
        self._check_width(input)
        return _chain_rule(input, self._plan())
