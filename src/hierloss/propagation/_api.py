"""The engine's public operations: each picks its form (eager Functions, compiled operators, or a plain forward)."""


from __future__ import annotations

import math
import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import hierloss.propagation._kernels as K
from hierloss._custom_ops import compiled
from hierloss._validation import check_width
from hierloss.propagation._plan import HierarchyLike, LevelPlan, PlanKind

__all__ = [
    "HierarchyLike",
    "LevelPlan",
    "PlanKind",
    "chain_rule_bce",
    "chain_rule_log",
    "chain_rule_marginals",
    "closure_max",
    "closure_min",
    "constrained_logits",
    "max_over_descendants",
    "min_over_ancestors",
]


def _route(needs_grad: bool) -> Literal["eager", "compiled", "values", "compiled values"]:
    """Which form runs: the autograd Functions (eager), the custom operators (under ``torch.compile``), or the
    forward alone: traced as plain operations under ``torch.export``, as one custom operator under
    ``torch.compile`` and eagerly otherwise, when nothing needs a gradient."""
    wanted = needs_grad and torch.is_grad_enabled()
    if compiled():
        return "compiled" if wanted else "compiled values"
    if torch.compiler.is_compiling():  # torch.export
        return "values"
    return "eager" if wanted else "values"


def _check_width(input: Tensor, num_labels: int) -> None:
    check_width(input, num_labels, matrix=False)


def _rows(input: Tensor, num_labels: int) -> Tensor:
    """``(..., C)`` → ``(M, C)`` (shapes only: ``C = 0`` works)."""
    return input.reshape(math.prod(input.shape[:-1]), num_labels)


def _ks_widths(plan: LevelPlan) -> tuple[list[int], list[int]]:
    return [k for k, _ in plan.groups], [w for _, w in plan.groups]


# ------------------------------------------------------------------------------------------------- max and min
def _extremum(input: Tensor, plan: LevelPlan, largest: bool) -> Tensor:
    _check_width(input, plan.num_labels)
    if not plan.groups:
        return input.clone()
    rows = _rows(input, plan.num_labels)
    route = _route(input.requires_grad)
    if route == "eager":
        from hierloss.propagation._autograd import Extremum

        out, _ = Extremum.apply(rows, plan.nodes, plan.neighbours, plan.groups, largest)  # type: ignore[no-untyped-call]
    elif route == "compiled":  # the operators take the rows labels-major, transposed by the compiled graph
        import hierloss.propagation._compiled as _compiled

        out, _ = _compiled.extremum(rows.t().contiguous(), plan.nodes, plan.neighbours, *_ks_widths(plan), largest)
    elif route == "compiled values":
        import hierloss.propagation._compiled as _compiled

        out = _compiled.extremum_values(rows.t().contiguous(), plan.nodes, plan.neighbours, *_ks_widths(plan),
                                        largest).t().contiguous()
    else:
        out = K.extremum_values(rows, plan, largest)
    return typing.cast(Tensor, out).view(input.shape)


def closure_max(input: Tensor, plan: LevelPlan) -> Tensor:
    """:func:`max_over_descendants` on a ``'descendants'`` plan (modules pass the one in their buffers)."""
    return _extremum(input, plan, largest=True)


def closure_min(input: Tensor, plan: LevelPlan) -> Tensor:
    """:func:`min_over_ancestors` on an ``'ancestors'`` plan."""
    return _extremum(input, plan, largest=False)


def max_over_descendants(input: Tensor, hierarchy: HierarchyLike) -> Tensor:
    """Each label's score becomes the max over itself and all its descendants.

    Args:
        input: ``(..., C)`` scores with ``C = hierarchy.num_labels`` (probabilities, logits or 0/1).
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``. Differentiable: the gradient of ``out[..., a]`` goes to the element holding the max (of those
        tied, the one with the smallest column index).

    The level plan's index tensors are copied to the device on every call; in a training or inference loop use
    :class:`~hierloss.MaxConstraint`, which keeps them in buffers.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> max_over_descendants(torch.tensor([[0.1, 0.2, 0.9]]), Hierarchy.from_dict({"a": ["b"], "b": ["c"]}))
        tensor([[0.9000, 0.9000, 0.9000]])
    """
    _check_width(input, hierarchy.num_labels)
    return closure_max(input, LevelPlan.build(hierarchy, "descendants", input.device))


def min_over_ancestors(input: Tensor, hierarchy: HierarchyLike) -> Tensor:
    """Each label's score becomes the min over itself and all its ancestors.

    Args:
        input: ``(..., C)`` scores with ``C = hierarchy.num_labels``.
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``. Differentiable as :func:`max_over_descendants` (ties: the smallest column index).

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> min_over_ancestors(torch.tensor([[0.1, 0.2, 0.9]]), Hierarchy.from_dict({"a": ["b"], "b": ["c"]}))
        tensor([[0.1000, 0.1000, 0.1000]])
    """
    _check_width(input, hierarchy.num_labels)
    return closure_min(input, LevelPlan.build(hierarchy, "ancestors", input.device))


def constrained_logits(input: Tensor, positive: Tensor, plan: LevelPlan) -> Tensor:
    """C-HMCNN's constrained logits on a ``'descendants'`` plan: ``MCM(where(y, z, −inf))`` where ``positive`` and
    ``MCM(z)`` elsewhere, ``MCM`` the max over self and descendants (:class:`~hierloss.losses.MCLoss` trains on
    them). One walk for both, and a one-``scatter_add`` backward: each element's gradient goes to the element its
    selected max came from (ties: the smallest column index).

    Args:
        input: ``(N, C)`` logits ``z``.
        positive: ``(N, C)`` bool, the positive targets ``y``.
        plan: the hierarchy's ``'descendants'`` plan.

    Returns:
        ``(N, C)`` constrained logits.
    """
    check_width(input, plan.num_labels)
    if positive.shape != input.shape or positive.dtype != torch.bool:
        raise ValueError(f"Expected `positive` of shape {tuple(input.shape)} and dtype torch.bool, got "
                         f"{tuple(positive.shape)} {positive.dtype}")
    if not plan.groups:
        return input.clone()
    route = _route(input.requires_grad)
    if route == "eager":
        from hierloss.propagation._autograd import ConstrainedLogits

        out, _ = ConstrainedLogits.apply(input, positive, plan.nodes, plan.neighbours,  # type: ignore[no-untyped-call]
                                         plan.groups)
        return out  # type: ignore[no-any-return]
    if route in ("compiled", "compiled values"):
        import hierloss.propagation._compiled as _compiled

        return typing.cast(Tensor, _compiled.constrained_logits(input, positive, plan.nodes, plan.neighbours,
                                                                *_ks_widths(plan))[0])
    return K.constrained_values(input, positive, plan)


# ---------------------------------------------------------------------------------------------- the chain rule
def chain_rule_log(input: Tensor, plan: LevelPlan) -> tuple[Tensor, Tensor]:
    """``(log P, log(1 − P))`` of the chain rule's marginals from ``(..., C)`` conditional logits, on a
    ``'parents'`` plan.

    ``log P(c) = logσ(z_c) + min over parents p of log P(p)`` and, with ``p`` that parent (ties: the smallest column
    index), ``log(1 − P(c)) = logaddexp(logσ(−z_c), logσ(z_c) + log(1 − P(p)))``; both are finite, with finite
    gradients, where a marginal rounds to 0 or 1. Roots: ``logσ(z)`` and ``logσ(−z)``.
    """
    _check_width(input, plan.num_labels)
    if not plan.groups:
        return F.logsigmoid(input), F.logsigmoid(-input)
    rows = _rows(input, plan.num_labels)
    route = _route(input.requires_grad)
    if route == "eager":
        from hierloss.propagation._autograd import ChainRule

        log_p, log_q, *_ = ChainRule.apply(rows, plan.nodes, plan.neighbours, plan.groups)  # type: ignore[no-untyped-call]
    elif route in ("compiled", "compiled values"):
        import hierloss.propagation._compiled as _compiled

        log_p, log_q, *_ = _compiled.chain_rule(rows, plan.nodes, plan.neighbours, *_ks_widths(plan))
    else:
        walk = K.chain_walk(rows.t().contiguous(), plan)
        log_p, log_q = walk.log_p.t().contiguous(), walk.log_q.t().contiguous()
    return log_p.view(input.shape), log_q.view(input.shape)


def chain_rule_marginals(input: Tensor, plan: LevelPlan) -> Tensor:
    """The chain rule's marginals ``P(c) = σ(z_c) · min over parents p of P(p)`` from ``(..., C)`` conditional
    logits, on a ``'parents'`` plan."""
    return chain_rule_log(input, plan)[0].exp()


def chain_rule_bce(input: Tensor, target: Tensor, plan: LevelPlan, pos_weight: Tensor | None = None) -> Tensor:
    """The element-wise BCE of the chain rule's marginals, ``−(pos_weight·y·log P + (1 − y)·log(1 − P))``, on a
    ``'parents'`` plan (:class:`~hierloss.losses.ChainRuleBCELoss`): one walk forward, one walk back, gradients to
    the logits and to a target that requires grad.

    Args:
        input: ``(N, C)`` conditional logits.
        target: ``(N, C)`` targets in ``[0, 1]`` (no NaN: mask them before).
        plan: the hierarchy's ``'parents'`` plan.
        pos_weight: ``(C,)`` weight of the positive term, or ``None``.

    Returns:
        ``(N, C)`` losses.
    """
    check_width(input, plan.num_labels)
    y = target.to(input.dtype)
    if not plan.groups:
        return F.binary_cross_entropy_with_logits(input, y, reduction="none", pos_weight=pos_weight)
    route = _route(input.requires_grad or y.requires_grad)
    if route == "eager":
        from hierloss.propagation._autograd import ChainRuleBCE

        loss, *_ = ChainRuleBCE.apply(input, y, pos_weight, plan.nodes,  # type: ignore[no-untyped-call]
                                      plan.neighbours, plan.groups)
        return loss  # type: ignore[no-any-return]
    if route in ("compiled", "compiled values"):
        import hierloss.propagation._compiled as _compiled

        return typing.cast(Tensor, _compiled.chain_rule_bce(input, y, pos_weight, plan.nodes, plan.neighbours,
                                                            *_ks_widths(plan))[0])
    walk = K.chain_walk(input.t().contiguous(), plan)
    return K.chain_bce_terms(walk.log_p, walk.log_q, y.t(), pos_weight).t().contiguous()
