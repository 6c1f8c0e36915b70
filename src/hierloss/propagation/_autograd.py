"""The engine's autograd Functions, run in eager mode: written backwards, forward-mode rules (``torch.func.jvp``),
vmap rules (a batch runs as extra rows) and double backward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import hierloss.propagation._kernels as K
from hierloss.propagation._plan import LevelPlan

__all__ = ["ChainRule", "ChainRuleBCE", "ConstrainedLogits", "Extremum"]


def _batched_rows(info: Any, in_dim: int | None, x: Tensor) -> Tensor:
    """A vmapped ``(M, C)`` argument as ``(B, M, C)``."""
    return x.movedim(in_dim, 0) if in_dim is not None else x.expand(info.batch_size, *x.shape)


class Extremum(torch.autograd.Function):
    """Max (min) over each label's closure of ``(M, C)`` rows, the arg kept for a one-``scatter_add`` backward
    (itself differentiable, so double backward works)."""

    @staticmethod
    def forward(x: Tensor, nodes: Tensor, neighbours: Tensor, groups: K.Groups,
                largest: bool) -> tuple[Tensor, Tensor]:
        return K.extremum_forward(x, LevelPlan(nodes, neighbours, groups, x.shape[1], "descendants"), largest)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        arg = output[1]
        ctx.mark_non_differentiable(arg)
        ctx.save_for_backward(arg)
        ctx.save_for_forward(arg)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
        (arg,) = ctx.saved_tensors
        return K.scatter_to_arg(arg, grad_out), None, None, None, None

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> tuple[Tensor, None]:
        (arg,) = ctx.saved_tensors
        return tangent.gather(1, arg), None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], x: Tensor, *rest: Any) -> tuple[tuple[Tensor, Tensor],
                                                                                   tuple[int, int]]:
        b, m, c = (x := _batched_rows(info, in_dims[0], x)).shape
        out, arg = Extremum.apply(x.reshape(b * m, c), *rest)  # type: ignore[no-untyped-call]
        return (out.view(b, m, c), arg.view(b, m, c)), (0, 0)


class ConstrainedLogits(torch.autograd.Function):
    """C-HMCNN's constrained logits (:func:`~hierloss.propagation._kernels.constrained_forward`), each element's
    gradient sent to the element its selected max came from."""

    @staticmethod
    def forward(z: Tensor, positive: Tensor, nodes: Tensor, neighbours: Tensor,
                groups: K.Groups) -> tuple[Tensor, Tensor]:
        return K.constrained_forward(z, positive, LevelPlan(nodes, neighbours, groups, z.shape[1], "descendants"))

    setup_context = Extremum.setup_context

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
        (arg,) = ctx.saved_tensors
        return K.scatter_to_arg(arg, grad_out), None, None, None, None

    jvp = Extremum.jvp

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], z: Tensor, positive: Tensor, *rest: Any) -> tuple[
            tuple[Tensor, Tensor], tuple[int, int]]:
        b, n, c = (z := _batched_rows(info, in_dims[0], z)).shape
        positive = _batched_rows(info, in_dims[1], positive)
        logits, arg = ConstrainedLogits.apply(  # type: ignore[no-untyped-call]
            z.reshape(b * n, c), positive.reshape(b * n, c), *rest)
        return (logits.view(b, n, c), arg.view(b, n, c)), (0, 0)


class ChainRule(torch.autograd.Function):
    """``(log P, log(1 − P))`` of the chain rule's marginals for ``(M, C)`` rows of conditional logits, with a written
    backward (one walk back); a gradient that must itself be differentiated goes through the reference."""

    @staticmethod
    def forward(z: Tensor, nodes: Tensor, neighbours: Tensor, groups: K.Groups) -> tuple[Tensor, ...]:
        walk = K.chain_walk(z.t().contiguous(), LevelPlan(nodes, neighbours, groups, z.shape[1], "parents"))
        return walk.log_p.t().contiguous(), walk.log_q.t().contiguous(), walk.parent, walk.w

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        z, nodes, neighbours, groups = inputs
        parent, w = output[2], output[3]
        ctx.mark_non_differentiable(parent, w)
        ctx.save_for_backward(z, parent, w, nodes, neighbours)
        ctx.save_for_forward(z, parent, w, nodes)
        ctx.groups = groups

    @staticmethod
    def backward(ctx: Any, grad_p: Tensor | None, grad_q: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
        z, parent, w, nodes, neighbours = ctx.saved_tensors
        if torch.is_grad_enabled():  # the gradient must have a graph: differentiate the reference
            plan = LevelPlan(nodes, neighbours, ctx.groups, z.shape[1], "parents")
            pairs = [(o, g) for o, g in zip(K.chain_reference(z, parent, plan), (grad_p, grad_q)) if g is not None]
            (grad,) = torch.autograd.grad([o for o, _ in pairs], z, [g for _, g in pairs], create_graph=True)
            return grad, None, None, None
        return K.chain_backward(z, parent, w, nodes, ctx.groups, grad_p, grad_q), None, None, None

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> tuple[Tensor, Tensor, None, None]:
        z, parent, w, nodes = ctx.saved_tensors
        tp, tq = K.chain_tangents(tangent, z, parent, w, nodes, ctx.groups)
        return tp, tq, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], z: Tensor, *rest: Any) -> tuple[tuple[Tensor, ...],
                                                                                  tuple[Any, ...]]:
        b, m, c = (z := _batched_rows(info, in_dims[0], z)).shape
        log_p, log_q, parent, w = ChainRule.apply(z.reshape(b * m, c), *rest)  # type: ignore[no-untyped-call]
        g = parent.shape[0]
        return (log_p.view(b, m, c), log_q.view(b, m, c), parent.view(g, b, m), w.view(g, b, m)), (0, 0, 1, 1)


class ChainRuleBCE(torch.autograd.Function):
    """``−(pos_weight·y·log P + (1 − y)·log(1 − P))`` per element with a written backward to the logits and to the
    target; a gradient that must itself be differentiated goes through the reference."""

    @staticmethod
    def forward(z: Tensor, y: Tensor, pos_weight: Tensor | None, nodes: Tensor, neighbours: Tensor,
                groups: K.Groups) -> tuple[Tensor, ...]:
        walk = K.chain_walk(z.t().contiguous(), LevelPlan(nodes, neighbours, groups, z.shape[1], "parents"))
        loss = K.chain_bce_terms(walk.log_p, walk.log_q, y.t(), pos_weight).t().contiguous()
        return loss, walk.parent, walk.w, walk.log_p, walk.log_q

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        z, y, pos_weight, nodes, neighbours, groups = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(z, y, pos_weight, *output[1:], nodes, neighbours)
        ctx.groups = groups

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        z, y, pos_weight, parent, w, log_p, log_q, nodes, neighbours = ctx.saved_tensors
        need_z, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rest = (None, None, None, None)
        if torch.is_grad_enabled():  # the gradient must have a graph: differentiate the reference
            lp, lq = K.chain_reference(z, parent, LevelPlan(nodes, neighbours, ctx.groups, z.shape[1], "parents"))
            loss = -(lq + y * ((lp if pos_weight is None else lp * pos_weight) - lq))
            wanted = [t for t, need in ((z, need_z), (y, need_y)) if need]
            grads = iter(torch.autograd.grad(loss, wanted, grad, create_graph=True, allow_unused=True))
            return (next(grads) if need_z else None), (next(grads) if need_y else None), *rest
        walk = K.ChainWalk(log_p, log_q, parent, w)
        return (*K.chain_bce_backward(z, y, pos_weight, walk, nodes, ctx.groups, grad, need_z, need_y), *rest)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], z: Tensor, y: Tensor, pos_weight: Tensor | None,
             *rest: Any) -> tuple[tuple[Tensor, ...], tuple[Any, ...]]:
        if pos_weight is not None and in_dims[2] is not None:
            raise ValueError("vmap over pos_weight is not supported: pass one (C,) pos_weight for the batch")
        b, m, c = (z := _batched_rows(info, in_dims[0], z)).shape
        y = _batched_rows(info, in_dims[1], y)
        loss, parent, w, log_p, log_q = ChainRuleBCE.apply(  # type: ignore[no-untyped-call]
            z.reshape(b * m, c), y.reshape(b * m, c), pos_weight, *rest)
        g = parent.shape[0]
        return ((loss.view(b, m, c), parent.view(g, b, m), w.view(g, b, m), log_p.view(c, b, m),
                 log_q.view(c, b, m)), (0, 1, 1, 1, 1))
