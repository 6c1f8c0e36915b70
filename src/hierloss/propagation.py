"""The propagation engine: every level-wise operation over a hierarchy, in one place.

Three operations walk a hierarchy level by level, and every module that needs one calls this engine:

* :func:`max_over_descendants` — each label becomes the max over itself and all its descendants
  (:class:`~hierloss.layers.MaxConstraint`, :class:`~hierloss.losses.MCLoss`, ``coherent(method='max')``,
  :meth:`Hierarchy.propagate <hierloss.Hierarchy.propagate>`);
* :func:`min_over_ancestors` — each label becomes the min over itself and all its ancestors
  (``coherent(method='min')``);
* :func:`chain_rule_log` — the chain rule's marginals from conditional logits, ``log P(c) = logσ(z_c) + min over
  parents p of log P(p)``, with ``log(1 − P(c))`` beside it (:class:`~hierloss.layers.ChainRule`,
  :class:`~hierloss.losses.ChainRuleBCELoss`).

**Plans.** A :class:`LevelPlan` lists, level after level, the labels a level writes and for each the labels it
reads (itself and its children, itself and its parents, or its parents), padded to a ``(k, K)`` matrix per *group*:
a level's labels are split into groups of similar width so that padding stays small. Modules build the plan once
and keep it in buffers (:class:`PlanBuffers`); the functional forms build it on every call.

**Cost.** The work runs labels-major (a ``(C, M)`` copy of the ``(M, C)`` input, ``M`` the rows): each group is one
gather of whole rows, one reduction and one row write, in place. Time and memory are ``O(M·(C + E))`` whatever the
depth: no ``(M, C)`` tensor is made per level, forward or backward. Each group costs a few small launches, so time
carries a fixed cost per level (measured in ``docs/benchmarks.md``). Nothing reads a value back to the host.

**Gradients** are written, not traced. The max and min keep, for each row and label, the index of the element that
attains the extremum (its *arg*), and the backward is one ``scatter_add``. **Ties:** the gradient of an output goes
to one element, the one with the smallest column index among those of the closure holding the extremum (where the
extremum is NaN, to the label itself). The chain rule keeps, for each row and label, the parent of smallest
marginal (ties: the smallest column index) and its backward walks the levels back once, adding each label's
gradient into that parent's. The backwards are made of differentiable operations, so double backward works too;
forward mode (``torch.func.jvp``) has its own written rules, and ``torch.func.vmap`` runs a batch as extra
columns.
"""

from __future__ import annotations

import math
import typing
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from hierloss.hierarchy import Hierarchy

__all__ = [
    "LevelPlan",
    "chain_rule_log",
    "chain_rule_marginals",
    "closure_max",
    "closure_min",
    "constrained_logits",
    "max_over_descendants",
    "min_over_ancestors",
]

PlanKind = Literal["descendants", "ancestors", "parents"]


@dataclass(frozen=True)
class LevelPlan:
    """The labels each level of a walk writes, and the labels each of them reads, in groups.

    Attributes:
        nodes: ``(G,)`` long tensor, the labels written, group after group.
        neighbours: ``(P,)`` long tensor, each group's ``(k, K)`` matrix of the labels read (row ``i`` for
            ``nodes[i]``), flattened row-major and concatenated; rows are padded by repeating their first entry.
        groups: ``(k, K)`` of each group in processing order (Python ints: slicing never reads the device).
        num_labels: ``C``.
        kind: ``'descendants'`` (rows: the label, then its children; groups by height, leaves first),
            ``'ancestors'`` (the label, then its parents; by depth, roots first) or ``'parents'`` (the parents
            only; by depth).
    """

    nodes: Tensor
    neighbours: Tensor
    groups: tuple[tuple[int, int], ...]
    num_labels: int
    kind: PlanKind

    @classmethod
    def build(cls, hierarchy: Hierarchy, kind: PlanKind, device: torch.device | str | None = None) -> LevelPlan:
        """The plan of ``hierarchy`` for one kind of walk, built on the CPU in ``O(C + E)`` and copied to
        ``device``."""
        if kind not in ("descendants", "ancestors", "parents"):
            raise ValueError(f"kind must be 'descendants', 'ancestors' or 'parents', got {kind!r}")
        built = _BUILT.setdefault(hierarchy, {})
        if kind not in built:
            parents, children = (t.numpy() for t in hierarchy.edge_index)
            if kind == "descendants":
                owner, read, level = parents, children, np.asarray(hierarchy.heights, dtype=np.int64)
            else:
                owner, read, level = children, parents, np.asarray(hierarchy.depths, dtype=np.int64)
            built[kind] = _plan_arrays(owner, read, level, hierarchy.num_labels, with_self=kind != "parents")
        nodes, neighbours, groups = built[kind]
        return cls(torch.tensor(nodes, device=device), torch.tensor(neighbours, device=device), groups,
                   hierarchy.num_labels, kind)

    def to(self, device: torch.device | str) -> LevelPlan:
        """The plan with its index tensors on ``device``."""
        return LevelPlan(self.nodes.to(device), self.neighbours.to(device), self.groups, self.num_labels, self.kind)


# The plans' arrays of the hierarchies in use, so that the functional forms do not rebuild them on every call. Keyed
# weakly (an entry goes with its hierarchy) and kept here, not on the Hierarchy, which stays a plain value.
_BUILT: weakref.WeakKeyDictionary[Hierarchy, dict[str, tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]]] = (
    weakref.WeakKeyDictionary())

# Group widths: a level's labels are grouped by the width of their row (itself + neighbours), rounded up to the
# next of these (then to multiples of 128), so a group pads at most ~1.5x while a level needs only a few groups.
_WIDTHS = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128], dtype=np.int64)


def _plan_arrays(owner: np.ndarray, read: np.ndarray, level: np.ndarray, num_labels: int,
                 with_self: bool) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """(nodes, flat neighbour matrices, group shapes) of the labels that own at least one edge."""
    order = np.lexsort((read, owner))  # by owner, then by the label read: rows in column order
    owner, read = owner[order], read[order]
    counts = np.bincount(owner, minlength=num_labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    labels = np.flatnonzero(counts)
    width = counts[labels] + int(with_self)
    rounded = np.where(width <= _WIDTHS[-1], _WIDTHS[np.minimum(np.searchsorted(_WIDTHS, width), len(_WIDTHS) - 1)],
                       -(-width // 128) * 128)
    key = np.lexsort((labels, rounded, level[labels]))  # by level, then width class, then label
    labels, rounded = labels[key], rounded[key]
    nodes: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    groups: list[tuple[int, int]] = []
    lv = level[labels]
    bounds = np.flatnonzero((np.diff(lv) != 0) | (np.diff(rounded) != 0)) + 1
    for chunk in np.split(np.arange(labels.size), bounds) if labels.size else []:
        ls, k_wide = labels[chunk], int(rounded[chunk[0]])
        deg = counts[ls]
        cols = np.arange(k_wide)[None, :] - int(with_self)  # column j reads neighbour j - with_self
        valid = (cols >= 0) & (cols < deg[:, None])
        idx = np.where(valid, starts[ls][:, None] + np.maximum(cols, 0), 0)
        mat = np.where(valid, read[idx], -1)
        if with_self:
            mat[:, 0] = ls
        first = mat[:, :1]
        mat = np.where(mat < 0, first, mat)  # pad by repeating the row's first entry
        nodes.append(ls)
        mats.append(mat.reshape(-1))
        groups.append((int(ls.size), k_wide))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(nodes).astype(np.int64) if nodes else empty,
            np.concatenate(mats).astype(np.int64) if mats else empty, tuple(groups))


# ---------------------------------------------------------------------------------------------------- the walks
# Every walk runs labels-major: on ``(C, M)`` tensors, where a group's gather reads whole rows. The public forms take
# ``(..., C)`` inputs; the losses hand transposed views in and out, so that their own element-wise operations do
# the transposition for free.
def _check_width(input: Tensor, num_labels: int) -> None:
    if input.ndim == 0 or input.shape[-1] != num_labels:
        raise ValueError(f"Expected `input` of shape (..., {num_labels}), got {tuple(input.shape)}")


def _walk_values(xt: Tensor, plan: LevelPlan, largest: bool) -> None:
    """In place on ``(C, M)``: each written label takes the max (min) over its row, group after group."""
    m = xt.shape[1]
    n0 = p0 = 0
    for k, width in plan.groups:
        nodes = plan.nodes[n0:n0 + k]
        cand = xt.index_select(0, plan.neighbours[p0:p0 + k * width]).view(k, width, m)
        n0, p0 = n0 + k, p0 + k * width
        xt.index_copy_(0, nodes, cand.amax(1) if largest else cand.amin(1))


def _walk_with_arg(xt: Tensor, plan: LevelPlan, largest: bool) -> Tensor:
    """In place as :func:`_walk_values`; returns the ``(C, M)`` int32 arg: the smallest column index among the
    elements of each label's closure that hold its extremum."""
    c, m = xt.shape
    # int32 while walking (its reductions vectorise where int64's do not), filled by copy (a broadcast copy is fast)
    arg = torch.empty(c, m, dtype=torch.int32, device=xt.device)
    arg.copy_(torch.arange(c, dtype=torch.int32, device=xt.device).unsqueeze(1))
    n0 = p0 = 0
    for k, width in plan.groups:
        nodes, flat = plan.nodes[n0:n0 + k], plan.neighbours[p0:p0 + k * width]
        n0, p0 = n0 + k, p0 + k * width
        cand = xt.index_select(0, flat).view(k, width, m)
        best = cand.amax(1) if largest else cand.amin(1)
        # the elements short of the extremum are pushed past every index (`c`), then the smallest index wins; a
        # NaN extremum is short of nothing, so its ties are all the row's
        short = (cand < best.unsqueeze(1)) if largest else (cand > best.unsqueeze(1))
        held = short.to(torch.int32).mul_(c).add_(arg.index_select(0, flat).view(k, width, m))
        xt.index_copy_(0, nodes, best)
        arg.index_copy_(0, nodes, held.amin(1))
    return arg


def _rows_long(arg: Tensor) -> Tensor:
    """A labels-major int32 arg ``(C, M)`` → samples-major int64 ``(M, C)``, the layout the gradients scatter in
    (transposed in int32, then widened: faster than both at once)."""
    return arg.t().contiguous().long()


class _Extremum(torch.autograd.Function):
    """Max (min) over each label's closure of ``(M, C)`` rows, walked labels-major, with the arg kept for a
    one-``scatter_add`` backward."""

    @staticmethod
    def forward(x: Tensor, nodes: Tensor, neighbours: Tensor, groups: tuple[tuple[int, int], ...],
                largest: bool) -> tuple[Tensor, Tensor]:
        xt = x.t().clone(memory_format=torch.contiguous_format)  # a copy even where .contiguous() would be a view
        arg = _walk_with_arg(xt, LevelPlan(nodes, neighbours, groups, x.shape[1], "descendants"), largest)
        return xt.t().contiguous(), _rows_long(arg)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        arg = output[1]
        ctx.mark_non_differentiable(arg)
        ctx.save_for_backward(arg)
        ctx.save_for_forward(arg)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
        (arg,) = ctx.saved_tensors
        grad = torch.zeros(arg.shape, dtype=grad_out.dtype, device=grad_out.device)
        return grad.scatter_add(1, arg, grad_out), None, None, None, None  # differentiable: double backward works

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], x: Tensor, *rest: Any) -> tuple[tuple[Tensor, Tensor],
                                                                                   tuple[int, int]]:
        # the batch of (M, C) rows runs as (B·M, C) rows
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        b, m, c = x.shape
        out, arg = _Extremum.apply(x.reshape(b * m, c), *rest)  # type: ignore[no-untyped-call]
        return (out.view(b, m, c), arg.view(b, m, c)), (0, 0)


class _ExtremumForwardAD(_Extremum):
    """:class:`_Extremum` with a forward-mode rule (``torch.func.jvp``): the tangent at the arg. Eager only:
    ``torch.compile`` cannot trace a Function that defines ``jvp``, so compiled code runs :class:`_Extremum`."""

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> tuple[Tensor, None]:
        (arg,) = ctx.saved_tensors
        return tangent.gather(1, arg), None


def _extremum(input: Tensor, plan: LevelPlan, largest: bool) -> Tensor:
    _check_width(input, plan.num_labels)
    rows = input.reshape(math.prod(input.shape[:-1]), plan.num_labels)
    if not plan.groups:
        return input.clone()
    if torch.is_grad_enabled() and input.requires_grad:
        fn = _Extremum if torch.compiler.is_compiling() else _ExtremumForwardAD
        out, _ = fn.apply(rows, plan.nodes, plan.neighbours, plan.groups, largest)  # type: ignore[no-untyped-call]
        return typing.cast(Tensor, out).view(input.shape)
    xt = rows.t().clone(memory_format=torch.contiguous_format)  # written in place: never a view of the input
    _walk_values(xt, plan, largest)
    return xt.t().contiguous().view(input.shape)


def closure_max(input: Tensor, plan: LevelPlan) -> Tensor:
    """:func:`max_over_descendants` on a ``'descendants'`` plan (modules pass the one in their buffers)."""
    return _extremum(input, plan, largest=True)


def closure_min(input: Tensor, plan: LevelPlan) -> Tensor:
    """:func:`min_over_ancestors` on an ``'ancestors'`` plan."""
    return _extremum(input, plan, largest=False)


class _ConstrainedLogits(torch.autograd.Function):
    """C-HMCNN's constrained logits ``where(y, MCM(where(y, z, −inf)), MCM(z))`` in one walk over ``(C, 2N)``, each
    element's gradient sent to the one element its selected max came from."""

    @staticmethod
    def forward(z: Tensor, positive: Tensor, nodes: Tensor, neighbours: Tensor,
                groups: tuple[tuple[int, int], ...]) -> tuple[Tensor, Tensor]:
        n, c = z.shape
        xt = torch.empty(c, 2 * n, dtype=z.dtype, device=z.device)
        xt[:, :n].copy_(z.t())
        xt[:, n:].copy_(torch.where(positive, z, float("-inf")).t())
        arg = _walk_with_arg(xt, LevelPlan(nodes, neighbours, groups, c, "descendants"), True)
        pos_t = positive.t()
        logits = torch.where(pos_t, xt[:, n:], xt[:, :n]).t().contiguous()
        return logits, _rows_long(torch.where(pos_t, arg[:, n:], arg[:, :n]))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        arg = output[1]
        ctx.mark_non_differentiable(arg)
        ctx.save_for_backward(arg)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
        (arg,) = ctx.saved_tensors
        grad = torch.zeros(arg.shape, dtype=grad_out.dtype, device=grad_out.device)
        return grad.scatter_add(1, arg, grad_out), None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], z: Tensor, positive: Tensor, *rest: Any) -> tuple[
            tuple[Tensor, Tensor], tuple[int, int]]:
        b = info.batch_size
        z = z.movedim(in_dims[0], 0) if in_dims[0] is not None else z.expand(b, *z.shape)
        positive = (positive.movedim(in_dims[1], 0) if in_dims[1] is not None
                    else positive.expand(b, *positive.shape))
        _, n, c = z.shape
        logits, arg = _ConstrainedLogits.apply(  # type: ignore[no-untyped-call]
            z.reshape(b * n, c), positive.reshape(b * n, c), *rest)
        return (logits.view(b, n, c), arg.view(b, n, c)), (0, 0)


class _ConstrainedLogitsForwardAD(_ConstrainedLogits):
    """:class:`_ConstrainedLogits` with a forward-mode rule; eager only (see :class:`_ExtremumForwardAD`)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        _ConstrainedLogits.setup_context(ctx, inputs, output)
        ctx.save_for_forward(output[1])

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> tuple[Tensor, None]:
        (arg,) = ctx.saved_tensors
        return tangent.gather(1, arg), None


def constrained_logits(input: Tensor, positive: Tensor, plan: LevelPlan) -> Tensor:
    """C-HMCNN's constrained logits on a ``'descendants'`` plan: ``MCM(where(y, z, −inf))`` where ``positive`` and
    ``MCM(z)`` elsewhere, ``MCM`` the max over self and descendants (:class:`~hierloss.losses.MCLoss` trains on
    them). One walk for both, and a one-``scatter_add`` backward.

    Args:
        input: ``(N, C)`` logits ``z``.
        positive: ``(N, C)`` bool, the positive targets ``y``.
        plan: the hierarchy's ``'descendants'`` plan.
    """
    if input.ndim != 2 or input.shape[1] != plan.num_labels:
        raise ValueError(f"Expected `input` of shape (N, {plan.num_labels}), got {tuple(input.shape)}")
    if not plan.groups:
        return input.clone()
    if torch.is_grad_enabled() and input.requires_grad:
        fn = _ConstrainedLogits if torch.compiler.is_compiling() else _ConstrainedLogitsForwardAD
        out, _ = fn.apply(input, positive, plan.nodes, plan.neighbours,  # type: ignore[no-untyped-call]
                          plan.groups)
        return typing.cast(Tensor, out)
    n = input.shape[0]
    xt = torch.cat((input.t(), torch.where(positive, input, float("-inf")).t()), dim=1)
    _walk_values(xt, plan, largest=True)
    return torch.where(positive.t(), xt[:, n:], xt[:, :n]).t().contiguous()


def max_over_descendants(input: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Each label's score becomes the max over itself and all its descendants.

    Args:
        input: ``(..., C)`` scores with ``C = hierarchy.num_labels`` (probabilities, logits or 0/1).
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``. Differentiable: the gradient of ``out[..., a]`` goes to the element holding the max (of those
        tied, the one with the smallest column index).

    The level plan is built (and copied to the device) on every call; in a training or inference loop use
    :class:`~hierloss.MaxConstraint`, which keeps it in buffers.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> max_over_descendants(torch.tensor([[0.1, 0.2, 0.9]]), Hierarchy.from_dict({"a": ["b"], "b": ["c"]}))
        tensor([[0.9000, 0.9000, 0.9000]])
    """
    _check_width(input, hierarchy.num_labels)
    return closure_max(input, LevelPlan.build(hierarchy, "descendants", input.device))


def min_over_ancestors(input: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Each label's score becomes the min over itself and all its ancestors.

    Args:
        input: ``(..., C)`` scores with ``C = hierarchy.num_labels``.
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``. Differentiable as :func:`max_over_descendants` (ties: the smallest column index).

    The level plan is built (and copied to the device) on every call.
    """
    _check_width(input, hierarchy.num_labels)
    return closure_min(input, LevelPlan.build(hierarchy, "ancestors", input.device))


# ---------------------------------------------------------------------------------------------- the chain rule
def _chain_forward(zt: Tensor, plan: LevelPlan, with_q: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """Labels-major ``(log P, log(1 − P) or None, parent)`` from labels-major conditional logits ``zt``."""
    c, m = zt.shape
    cond = F.logsigmoid(zt)
    log_p = cond.clone()
    log_q = F.logsigmoid(-zt) if with_q else None
    parent = torch.empty(c, m, dtype=torch.long, device=zt.device)
    parent.copy_(torch.arange(c, device=zt.device).unsqueeze(1))
    n0 = p0 = 0
    for k, width in plan.groups:
        nodes = plan.nodes[n0:n0 + k]
        mat = plan.neighbours[p0:p0 + k * width].view(k, width)
        n0, p0 = n0 + k, p0 + k * width
        cand = log_p.index_select(0, mat.reshape(-1)).view(k, width, m)
        low = cand.amin(1)
        # the parent of smallest marginal; ties to the smallest index (a NaN minimum: every parent ties)
        short = (cand > low.unsqueeze(1)).to(torch.int32).mul_(c)
        pick = short.add_(mat.to(torch.int32).unsqueeze(-1)).amin(1).long()
        b = cond.index_select(0, nodes)
        log_p.index_copy_(0, nodes, b + low)
        parent.index_copy_(0, nodes, pick)
        if log_q is not None:
            a = log_q.index_select(0, nodes)
            log_q.index_copy_(0, nodes, torch.logaddexp(a, b + log_q.gather(0, pick)))
    return log_p, log_q, parent


class _ChainRule(torch.autograd.Function):
    """``(log P, log(1 − P))`` of the chain rule's marginals for ``(M, C)`` rows of conditional logits, walked
    labels-major, with a written backward (one walk back)."""

    @staticmethod
    def forward(z: Tensor, nodes: Tensor, neighbours: Tensor,
                groups: tuple[tuple[int, int], ...]) -> tuple[Tensor, Tensor, Tensor]:
        plan = LevelPlan(nodes, neighbours, groups, z.shape[1], "parents")
        log_p, log_q, parent = _chain_forward(z.t().contiguous(), plan, with_q=True)
        return log_p.t().contiguous(), typing.cast(Tensor, log_q).t().contiguous(), parent

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        z, nodes, _, groups = inputs
        _, log_q, parent = output
        ctx.mark_non_differentiable(parent)
        # the backward reads only differentiable tensors (z, log q) and the parent indices: double backward works
        ctx.save_for_backward(z, log_q, parent, nodes)
        ctx.save_for_forward(z, log_q, parent, nodes)
        ctx.groups = groups

    @staticmethod
    def backward(ctx: Any, grad_p: Tensor | None, grad_q: Tensor | None, _: Any) -> tuple[Tensor | None, ...]:
        z, log_q, parent, nodes = ctx.saved_tensors
        zt, log_qt = z.t().contiguous(), log_q.t().contiguous()
        # fresh labels-major accumulators, made from zt so that under torch.func.vmap they are batched like the
        # indices written into them (an incoming gradient may not be: the gradient of a sum is not)
        gp, gq = torch.zeros_like(zt), torch.zeros_like(zt)
        if grad_p is not None:
            gp += grad_p.t()
        if grad_q is not None:
            gq += grad_q.t()
        b = F.logsigmoid(zt)
        # w: the weight of logaddexp's second term in log(1 − P) = logaddexp(a, b + parent's); roots: 0 (their
        # parent entry is themselves)
        own = torch.arange(zt.shape[0], device=zt.device).unsqueeze(1)
        w = torch.where(parent != own, torch.exp(b + log_qt.gather(0, parent) - log_qt), 0.0)
        # walk back, deepest group first: a label passes its gradient on to the parent it took its marginal from
        # (times w for log(1 − P))
        n1 = nodes.numel()
        for k, _width in reversed(ctx.groups):
            n1 -= k
            nodes_g = nodes[n1:n1 + k]
            pick = parent.index_select(0, nodes_g)
            gp.scatter_add_(0, pick, gp.index_select(0, nodes_g))
            gq.scatter_add_(0, pick, gq.index_select(0, nodes_g) * w.index_select(0, nodes_g))
        s = torch.sigmoid(zt)
        # d b / dz = 1 − σ(z), d a / dz = −σ(z); d log(1 − P) = (1 − w)·da + w·db
        grad_z = gp * (1 - s) + gq * (w - s)
        return grad_z.t(), None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], z: Tensor, *rest: Any) -> tuple[tuple[Tensor, ...],
                                                                                  tuple[Any, ...]]:
        z = z.movedim(in_dims[0], 0) if in_dims[0] is not None else z.expand(info.batch_size, *z.shape)
        b, m, c = z.shape
        log_p, log_q, parent = _ChainRule.apply(z.reshape(b * m, c), *rest)  # type: ignore[no-untyped-call]
        return (log_p.view(b, m, c), log_q.view(b, m, c), parent.view(c, b, m)), (0, 0, 1)


class _ChainRuleForwardAD(_ChainRule):
    """:class:`_ChainRule` with a forward-mode rule (``torch.func.jvp``); eager only, as for
    :class:`_ExtremumForwardAD`."""

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> tuple[Tensor, Tensor, None]:
        # forward mode walks the levels as the forward does: t_p = b'·t + t_p(parent), and t_q = (1 − w)·a'·t +
        # w·(b'·t + t_q(parent)) with a' = −σ, b' = 1 − σ and w the weight of logaddexp's second term
        z, log_q, parent, nodes = ctx.saved_tensors
        zt, log_qt = z.t(), log_q.t()
        s = torch.sigmoid(zt)
        t = tangent.t()
        tb = ((1 - s) * t).contiguous()
        tp = tb.clone()
        tq = (-s * t).contiguous()
        n0 = 0
        for k, _width in ctx.groups:
            nodes_g = nodes[n0:n0 + k]
            n0 += k
            pick = parent.index_select(0, nodes_g)
            b = F.logsigmoid(zt.index_select(0, nodes_g))
            w = torch.exp(b + log_qt.gather(0, pick) - log_qt.index_select(0, nodes_g))
            tb_g = tb.index_select(0, nodes_g)
            tp.index_copy_(0, nodes_g, tb_g + tp.gather(0, pick))
            tq.index_copy_(0, nodes_g, (1 - w) * tq.index_select(0, nodes_g) + w * (tb_g + tq.gather(0, pick)))
        return tp.t(), tq.t(), None


def _chain(input: Tensor, plan: LevelPlan, with_q: bool) -> tuple[Tensor, Tensor | None]:
    _check_width(input, plan.num_labels)
    rows = input.reshape(math.prod(input.shape[:-1]), plan.num_labels)
    if not plan.groups:
        return F.logsigmoid(input), (F.logsigmoid(-input) if with_q else None)
    if torch.is_grad_enabled() and input.requires_grad:
        fn = _ChainRule if torch.compiler.is_compiling() else _ChainRuleForwardAD
        log_p, log_q, _ = fn.apply(rows, plan.nodes, plan.neighbours, plan.groups)  # type: ignore[no-untyped-call]
        return log_p.view(input.shape), log_q.view(input.shape)
    log_pt, log_qt, _ = _chain_forward(rows.t().contiguous(), plan, with_q)
    return (log_pt.t().contiguous().view(input.shape),
            None if log_qt is None else log_qt.t().contiguous().view(input.shape))


def chain_rule_log(input: Tensor, plan: LevelPlan) -> tuple[Tensor, Tensor]:
    """``(log P, log(1 − P))`` of the chain rule's marginals from ``(..., C)`` conditional logits, on a
    ``'parents'`` plan.

    ``log P(c) = logσ(z_c) + min over parents p of log P(p)`` and, with ``p`` that parent (ties: the smallest column
    index), ``log(1 − P(c)) = logaddexp(logσ(−z_c), logσ(z_c) + log(1 − P(p)))``; both are finite, with finite
    gradients, where a marginal rounds to 0 or 1. Roots: ``logσ(z)`` and ``logσ(−z)``.
    """
    log_p, log_q = _chain(input, plan, with_q=True)
    return log_p, typing.cast(Tensor, log_q)


def chain_rule_marginals(input: Tensor, plan: LevelPlan) -> Tensor:
    """The chain rule's marginals ``P(c) = σ(z_c) · min over parents p of P(p)`` from ``(..., C)`` conditional
    logits, on a ``'parents'`` plan."""
    return _chain(input, plan, with_q=False)[0].exp()
