"""The walks: plain tensor code, run by the autograd Functions (eager) and by the custom operators (compiled).

Every walk runs labels-major, on ``(C, M)`` tensors where a group's gather reads whole rows; inputs and outputs cross
the boundary samples-major, ``(M, C)``. Nothing here reads a value back to the host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from hierloss.propagation._plan import LevelPlan

Groups = tuple[tuple[int, int], ...]


def labels_major_copy(x: Tensor) -> Tensor:
    """A labels-major ``(C, M)`` copy of ``(M, C)`` rows that a walk may write into (never a view of ``x``, even where
    ``.contiguous()`` would give one)."""
    return x.t().clone(memory_format=torch.contiguous_format)


def walk_values(xt: Tensor, plan: LevelPlan, largest: bool) -> None:
    """In place on ``(C, M)``: each written label takes the max (min) over its row, group after group."""
    m = xt.shape[1]
    n0 = p0 = 0
    for k, width in plan.groups:
        nodes = plan.nodes[n0:n0 + k]
        cand = xt.index_select(0, plan.neighbours[p0:p0 + k * width]).view(k, width, m)
        n0, p0 = n0 + k, p0 + k * width
        xt.index_copy_(0, nodes, cand.amax(1) if largest else cand.amin(1))


def walk_with_arg(xt: Tensor, plan: LevelPlan, largest: bool) -> Tensor:
    """In place as :func:`walk_values`; returns the ``(C, M)`` int32 arg: the smallest column index among the
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
        held = torch.add(arg.index_select(0, flat).view(k, width, m), short, alpha=c)
        xt.index_copy_(0, nodes, best)
        arg.index_copy_(0, nodes, held.amin(1))
    return arg


def rows_long(arg: Tensor) -> Tensor:
    """A labels-major int32 arg ``(C, M)`` → samples-major int64 ``(M, C)``, the layout the gradients scatter in
    (transposed in int32, then widened: faster than both at once)."""
    return arg.t().contiguous().long()


# ------------------------------------------------------------------------------------------- max and min
def extremum_forward(x: Tensor, plan: LevelPlan, largest: bool) -> tuple[Tensor, Tensor]:
    """``(M, C)`` rows → (their max (min) over each label's closure ``(M, C)``, its arg ``(M, C)`` int64)."""
    xt = labels_major_copy(x)
    arg = walk_with_arg(xt, plan, largest)
    return xt.t().contiguous(), rows_long(arg)


def extremum_values(x: Tensor, plan: LevelPlan, largest: bool) -> Tensor:
    """The values of :func:`extremum_forward` only (no arg: nothing to differentiate)."""
    xt = labels_major_copy(x)
    walk_values(xt, plan, largest)
    return xt.t().contiguous()


def scatter_to_arg(arg: Tensor, grad_out: Tensor) -> Tensor:
    """The backward of every max and min: each output's gradient goes to the element its arg names (one
    ``scatter_add``, differentiable in ``grad_out``)."""
    grad = torch.zeros(arg.shape, dtype=grad_out.dtype, device=grad_out.device)
    return grad.scatter_add(1, arg, grad_out)


def _both_maxima(zt: Tensor, pos_t: Tensor, plan: LevelPlan) -> tuple[Tensor, Tensor]:
    """The two maxima of the constrained logits in one walk: ``[MCM(z) | MCM(where(y, z, −inf))]`` ``(C, 2N)`` from
    labels-major ``zt`` (any strides) and ``pos_t`` (contiguous), with its int32 arg."""
    c, n = zt.shape
    xt = torch.empty(c, 2 * n, dtype=zt.dtype, device=zt.device)
    xt[:, :n].copy_(zt)
    xt[:, n:].copy_(zt)
    xt[:, n:].masked_fill_(~pos_t, float("-inf"))
    return xt, walk_with_arg(xt, plan, True)


def constrained_forward(z: Tensor, positive: Tensor, plan: LevelPlan) -> tuple[Tensor, Tensor]:
    """C-HMCNN's constrained logits ``where(y, MCM(where(y, z, −inf)), MCM(z))`` of ``(N, C)`` logits, both maxima in
    one walk over ``(C, 2N)``; returns them with the arg of the selected max ``(N, C)`` int64. Temporaries are freed
    as soon as they are read: the peak is about five times the input."""
    n, c = z.shape
    pos_t = positive.t().contiguous()  # labels-major like the walk: a `where` over mixed layouts is slow
    xt, arg = _both_maxima(z.t(), pos_t, plan)
    logits = torch.empty(n, c, dtype=z.dtype, device=z.device)
    torch.where(pos_t, xt[:, n:], xt[:, :n], out=logits.t())
    del xt
    chosen = torch.where(pos_t, arg[:, n:], arg[:, :n])
    del arg
    return logits, rows_long(chosen)


def constrained_walk(zt: Tensor, pos_t: Tensor, plan: LevelPlan) -> tuple[Tensor, Tensor]:
    """:func:`constrained_forward` labels-major: ``(C, N)`` logits and positives (contiguous) → the ``(C, N)``
    constrained logits and the int32 arg of the selected max, with no transpose."""
    n = zt.shape[1]
    xt, arg = _both_maxima(zt, pos_t, plan)
    return torch.where(pos_t, xt[:, n:], xt[:, :n]), torch.where(pos_t, arg[:, n:], arg[:, :n])


def constrained_values(z: Tensor, positive: Tensor, plan: LevelPlan) -> Tensor:
    """The values of :func:`constrained_forward` only."""
    n = z.shape[0]
    xt = torch.cat((z.t(), torch.where(positive, z, float("-inf")).t()), dim=1)
    walk_values(xt, plan, largest=True)
    return torch.where(positive.t().contiguous(), xt[:, n:], xt[:, :n]).t().contiguous()


# ---------------------------------------------------------------------------------------------- the chain rule
class ChainWalk(NamedTuple):
    """A forward walk of the chain rule, labels-major: ``log P`` and ``log(1 − P)`` ``(C, M)``; and for each label
    written (``plan.nodes`` order, ``(G, M)``) the parent it took its marginal from and ``w``, the weight of the
    second term of ``log(1 − P) = logaddexp(logσ(−z), logσ(z) + log(1 − P(parent)))``."""

    log_p: Tensor
    log_q: Tensor
    parent: Tensor
    w: Tensor


def chain_walk(zt: Tensor, plan: LevelPlan) -> ChainWalk:
    """The chain rule on labels-major conditional logits ``zt`` (``(C, M)``), group after group."""
    c, m = zt.shape
    log_p = F.logsigmoid(zt)  # logσ(z) until a label's group writes its marginal
    log_q = F.logsigmoid(-zt)
    g = plan.nodes.numel()
    parent = torch.empty(g, m, dtype=torch.long, device=zt.device)
    w = torch.empty(g, m, dtype=zt.dtype, device=zt.device)
    n0 = p0 = 0
    for k, width in plan.groups:
        nodes = plan.nodes[n0:n0 + k]
        mat = plan.neighbours[p0:p0 + k * width].view(k, width)
        cand = log_p.index_select(0, mat.reshape(-1)).view(k, width, m)
        low = cand.amin(1)
        # the parent of smallest marginal; ties to the smallest index (a NaN minimum: every parent ties)
        pick = torch.add(mat.to(torch.int32).unsqueeze(-1), cand > low.unsqueeze(1), alpha=c).amin(1).long()
        b = log_p.index_select(0, nodes)  # still logσ(z): each label is written once, here
        second = b + log_q.gather(0, pick)
        q = torch.logaddexp(log_q.index_select(0, nodes), second)
        log_p.index_copy_(0, nodes, b + low)
        log_q.index_copy_(0, nodes, q)
        parent[n0:n0 + k] = pick
        w[n0:n0 + k] = torch.exp(second - q)
        n0, p0 = n0 + k, p0 + k * width
    return ChainWalk(log_p, log_q, parent, w)


def chain_walk_back(gp: Tensor, gq: Tensor, zt: Tensor, parent: Tensor, w: Tensor, nodes: Tensor,
                    groups: Groups) -> Tensor:
    """The gradient with respect to ``zt`` (``(C, M)``) of ``Σ gp·log P + gq·log(1 − P)``; ``gp`` and ``gq`` are
    fresh labels-major accumulators, written in place. One walk back, deepest group first: a label passes its
    gradient on to the parent it took its marginal from (times ``w`` for ``log(1 − P)``)."""
    carried = torch.empty_like(w)  # gq·w of each written label: its own share of d logσ(z)
    n1 = nodes.numel()
    for k, _width in reversed(groups):
        n1 -= k
        nodes_g = nodes[n1:n1 + k]
        pick = parent[n1:n1 + k]
        gq_w = gq.index_select(0, nodes_g).mul_(w[n1:n1 + k])
        carried[n1:n1 + k] = gq_w
        gp.scatter_add_(0, pick, gp.index_select(0, nodes_g))
        gq.scatter_add_(0, pick, gq_w)
    # d logσ(z) = (1 − σ)·dz, d logσ(−z) = −σ·dz; log P takes logσ(z), log(1 − P) takes (1 − w)·logσ(−z) + w·(…)
    total = gp + gq
    total.mul_(torch.sigmoid(zt))
    return gp.sub_(total).index_add_(0, nodes, carried)


def chain_backward(z: Tensor, parent: Tensor, w: Tensor, nodes: Tensor, groups: Groups, grad_p: Tensor | None,
                   grad_q: Tensor | None) -> Tensor:
    """The gradient with respect to ``(M, C)`` logits ``z`` of ``Σ grad_p·log P + grad_q·log(1 − P)``."""
    zt = z.t().contiguous()
    # fresh accumulators made from zt, so that under torch.func.vmap they are batched like the indices written
    # into them (an incoming gradient may not be: the gradient of a sum is not)
    gp, gq = torch.zeros_like(zt), torch.zeros_like(zt)
    if grad_p is not None:
        gp += grad_p.t()
    if grad_q is not None:
        gq += grad_q.t()
    return chain_walk_back(gp, gq, zt, parent, w, nodes, groups).t()


def chain_reference(z: Tensor, parent: Tensor, plan: LevelPlan) -> tuple[Tensor, Tensor]:
    """``(log P, log(1 − P))`` of ``(M, C)`` rows along the given parents, out of place and differentiable by
    autograd: the graph the written backwards hand over to when the gradient itself must be differentiated
    (``create_graph=True``, ``torch.func`` transforms)."""
    zt = z.t()
    b, a = F.logsigmoid(zt), F.logsigmoid(-zt)
    log_p, log_q = b, a
    n0 = 0
    for k, _width in plan.groups:
        nodes = plan.nodes[n0:n0 + k]
        pick = parent[n0:n0 + k]
        n0 += k
        b_g = b.index_select(0, nodes)
        new_p = b_g + log_p.gather(0, pick)
        new_q = torch.logaddexp(a.index_select(0, nodes), b_g + log_q.gather(0, pick))
        log_p, log_q = log_p.index_copy(0, nodes, new_p), log_q.index_copy(0, nodes, new_q)
    return log_p.t(), log_q.t()


def chain_tangents(tangent: Tensor, z: Tensor, parent: Tensor, w: Tensor, nodes: Tensor,
                   groups: Groups) -> tuple[Tensor, Tensor]:
    """Forward mode on ``(M, C)`` rows: the walk of the forward on tangents, ``ṗ = (1 − σ)·ż + ṗ(parent)`` and
    ``q̇ = −(1 − w)·σ·ż + w·((1 − σ)·ż + q̇(parent))``."""
    zt, t = z.t(), tangent.t()
    s = torch.sigmoid(zt)
    tb = ((1 - s) * t).contiguous()
    tp, tq = tb.clone(), (-s * t).contiguous()
    n0 = 0
    for k, _width in groups:
        nodes_g = nodes[n0:n0 + k]
        pick, w_g = parent[n0:n0 + k], w[n0:n0 + k]
        n0 += k
        tb_g = tb.index_select(0, nodes_g)
        tp.index_copy_(0, nodes_g, tb_g + tp.gather(0, pick))
        tq.index_copy_(0, nodes_g, (1 - w_g) * tq.index_select(0, nodes_g) + w_g * (tb_g + tq.gather(0, pick)))
    return tp.t(), tq.t()


def chain_bce_terms(log_p: Tensor, log_q: Tensor, yt: Tensor, pos_weight: Tensor | None) -> Tensor:
    """Labels-major ``−(pos_weight·y·log P + (1 − y)·log(1 − P))`` (``yt`` the target's transpose, any strides)."""
    scaled_p = log_p if pos_weight is None else log_p * pos_weight.unsqueeze(1)
    return torch.addcmul(log_q, yt, scaled_p - log_q).neg_()


def chain_bce_backward(z: Tensor, y: Tensor, pos_weight: Tensor | None, walk: ChainWalk, nodes: Tensor,
                       groups: Groups, grad: Tensor, need_z: bool, need_y: bool) -> tuple[Tensor | None,
                                                                                           Tensor | None]:
    """The gradients of the element-wise chain-rule BCE with respect to the logits and the target."""
    c, m = walk.log_p.shape
    gt, yt = grad.t(), y.t()
    grad_y = None
    if need_y:  # d/dy = −(pw·log p − log q)·g
        scaled_p = walk.log_p if pos_weight is None else walk.log_p * pos_weight.unsqueeze(1)
        grad_y = ((walk.log_q - scaled_p) * gt).t()
    grad_z = None
    if need_z:
        yg = torch.mul(yt, gt, out=torch.empty(c, m, dtype=z.dtype, device=z.device))
        gq = torch.sub(yg, gt, out=torch.empty_like(yg))  # −(1 − y)·g
        gp = yg.neg_() if pos_weight is None else yg.mul_(-pos_weight.unsqueeze(1))  # −pw·y·g
        grad_z = chain_walk_back(gp, gq, z.t(), walk.parent, walk.w, nodes, groups).t()
    return grad_z, grad_y
