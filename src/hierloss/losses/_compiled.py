"""MCLoss and ChainRuleBCELoss as custom operators, for code under ``torch.compile``.

Traced, each of these losses is the engine's walk (an operator, :mod:`hierloss.propagation._compiled`) with the
target masks, the BCE and the reduction around it as Inductor kernels, which on the CPU run slower than eager (a
kernel that writes a bool mask, several times slower than ATen's): both losses compiled slower than eager. As one
operator each, forward and backward, the compiled graph runs the code of eager mode: the same masks
(:func:`~hierloss._masking.target_mask`), walks and BCE (:mod:`hierloss.propagation._kernels`), reduction
(:func:`~hierloss._reduction.reduce_valid`) and written backward. The operators compute labels-major, on ``(C, N)``
logits and targets, the layout of the walks: the compiled graph makes it with Inductor's transposes (several times
faster than the ATen transposes eager mode pays inside its kernels), turns a ``'none'`` loss back, and for MCLoss
scatters the gradient through the arg. :func:`~hierloss._custom_ops.compiled` chooses them; the losses' eager path
is unchanged, and ``torch.export`` still traces plain operations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import hierloss.propagation._kernels as K
from hierloss._custom_ops import kernel_dispatch
from hierloss._masking import target_mask
from hierloss._reduction import reduce_valid, reduce_valid_backward
from hierloss.propagation import LevelPlan, PlanKind

__all__ = ["chain_rule_bce_loss", "mc_loss"]


def _plan(nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int], num_labels: int,
          kind: PlanKind) -> LevelPlan:
    return LevelPlan(nodes, neighbours, tuple(zip(ks, widths)), num_labels, kind)


def _ks_widths(plan: LevelPlan) -> tuple[list[int], list[int]]:
    return [k for k, _ in plan.groups], [w for _, w in plan.groups]


def _loss_like(z: Tensor, reduction: str) -> Tensor:
    """The fake of a loss's value: ``(N, C)`` for ``'none'``, else a scalar."""
    return torch.empty_like(z, memory_format=torch.contiguous_format) if reduction == "none" else z.new_empty(())


def _grad_like(x: Tensor, needed: bool) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format) if needed else x.new_empty(0)


def _if_needed(needed: bool, grad: Tensor) -> Tensor | None:
    return grad if needed else None


class _LabelsMajor(torch.autograd.Function):
    """``x.t().contiguous()``, whose gradient comes back contiguous too: a plain transpose's gradient is a transposed
    view, which ``torch.autograd.grad`` would hand to the caller and ``AccumulateGrad`` copy with ATen's slow
    transpose (here the compiled graph transposes)."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.t().contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.t().contiguous()


def _labels_major(z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(C, N)`` copies of the ``(N, C)`` logits and targets, made by the compiled graph."""
    return _LabelsMajor.apply(z), _LabelsMajor.apply(target)  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------------------- MCLoss
def mc_loss(z: Tensor, target: Tensor, plan: LevelPlan, reduction: str, ignore_index: float | None) -> Tensor:
    """:func:`~hierloss.losses.mc_loss` of float logits ``z`` (after its checks), as one operator."""
    zt, target_t = _labels_major(z, target)
    loss: Tensor = _mc_loss(zt, target_t, plan.nodes, plan.neighbours, *_ks_widths(plan), reduction, ignore_index)[0]
    return loss.t().contiguous() if reduction == "none" else loss


@torch.library.custom_op("hierloss::mc_loss", mutates_args=())
def _mc_loss(zt: Tensor, target_t: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
             reduction: str, ignore_index: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """(the loss, the constrained logits, the int32 arg of their maxima), all ``(C, N)``; the last two for the
    backward."""
    with kernel_dispatch():
        clean, valid = target_mask(target_t, ignore_index)
        y = clean.to(zt.dtype)
        plan = _plan(nodes, neighbours, ks, widths, zt.shape[0], "descendants")
        logits, arg = K.constrained_walk(zt, y > 0.5, plan)
        loss = reduce_valid(F.binary_cross_entropy_with_logits(logits, y, reduction="none"), reduction, valid)
        return loss, logits, arg


@_mc_loss.register_fake
def _(zt: Tensor, target_t: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
      reduction: str, ignore_index: float | None) -> tuple[Tensor, Tensor, Tensor]:
    return (_loss_like(zt, reduction), torch.empty_like(zt, memory_format=torch.contiguous_format),
            zt.new_empty(zt.shape, dtype=torch.int32))


@torch.library.custom_op("hierloss::mc_loss_backward", mutates_args=())
def _mc_loss_backward(grad: Tensor, logits: Tensor, target_t: Tensor, reduction: str, ignore_index: float | None,
                      need_input: bool, need_target: bool) -> tuple[Tensor, Tensor]:
    """BCE's gradients, ``(σ(l) − y)·g`` with respect to the constrained logits ``l`` and ``−l·g`` to the target,
    ``g`` each term's share of ``grad`` (0 where the target is masked); all ``(C, N)``."""
    with kernel_dispatch():
        clean, valid = target_mask(target_t, ignore_index)
        g = reduce_valid_backward(grad, tuple(logits.shape), reduction, valid)
        grad_logits = grad_target = logits.new_empty(0)
        if need_input:
            grad_logits = torch.sigmoid(logits).sub_(clean.to(logits.dtype)).mul_(g)
        if need_target:
            grad_target = torch.mul(logits, g).neg_().to(target_t.dtype)
        return grad_logits, grad_target


@_mc_loss_backward.register_fake
def _(grad: Tensor, logits: Tensor, target_t: Tensor, reduction: str, ignore_index: float | None, need_input: bool,
      need_target: bool) -> tuple[Tensor, Tensor]:
    return _grad_like(logits, need_input), _grad_like(target_t, need_target)


def _mc_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _, target_t, _, _, _, _, reduction, ignore_index = inputs
    ctx.save_for_backward(output[1], output[2], target_t)
    ctx.reduction, ctx.ignore_index = reduction, ignore_index


def _mc_back(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    logits, arg, target_t = ctx.saved_tensors
    need_input, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_logits, grad_target = _mc_loss_backward(grad.contiguous(), logits, target_t, ctx.reduction,
                                                 ctx.ignore_index, need_input, need_target)
    # one scatter through the arg, samples-major (the fast direction of a scatter), then seen labels-major
    grad_input = K.scatter_to_arg(arg.t().long(), grad_logits.t()).t() if need_input else None
    return grad_input, _if_needed(need_target, grad_target), None, None, None, None, None, None


_mc_loss.register_autograd(_mc_back, setup_context=_mc_setup)


# ----------------------------------------------------------------------------------------------- ChainRuleBCELoss
def chain_rule_bce_loss(z: Tensor, target: Tensor, plan: LevelPlan, reduction: str, pos_weight: Tensor | None,
                        ignore_index: float | None) -> Tensor:
    """:func:`~hierloss.losses.chain_rule_bce_loss` of float logits ``z`` (after its checks; ``pos_weight`` in
    ``z``'s dtype), as one operator."""
    zt, target_t = _labels_major(z, target)
    loss: Tensor = _chain_rule_bce_loss(zt, target_t, pos_weight, plan.nodes, plan.neighbours, *_ks_widths(plan),
                                        reduction, ignore_index)[0]
    return loss.t().contiguous() if reduction == "none" else loss


@torch.library.custom_op("hierloss::chain_rule_bce_loss", mutates_args=())
def _chain_rule_bce_loss(zt: Tensor, target_t: Tensor, pos_weight: Tensor | None, nodes: Tensor,
                         neighbours: Tensor, ks: list[int], widths: list[int], reduction: str,
                         ignore_index: float | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(the loss, then the walk for the backward: parents, weights, ``log P``, ``log(1 − P)``), all labels-major."""
    with kernel_dispatch():
        clean, valid = target_mask(target_t, ignore_index)
        walk = K.chain_walk(zt, _plan(nodes, neighbours, ks, widths, zt.shape[0], "parents"))
        terms = K.chain_bce_terms(walk.log_p, walk.log_q, clean.to(zt.dtype), pos_weight)
        return reduce_valid(terms, reduction, valid), walk.parent, walk.w, walk.log_p, walk.log_q


@_chain_rule_bce_loss.register_fake
def _(zt: Tensor, target_t: Tensor, pos_weight: Tensor | None, nodes: Tensor, neighbours: Tensor, ks: list[int],
      widths: list[int], reduction: str, ignore_index: float | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    g, m = nodes.shape[0], zt.shape[1]
    return (_loss_like(zt, reduction), zt.new_empty((g, m), dtype=torch.long), zt.new_empty((g, m)),
            torch.empty_like(zt, memory_format=torch.contiguous_format),
            torch.empty_like(zt, memory_format=torch.contiguous_format))


@torch.library.custom_op("hierloss::chain_rule_bce_loss_backward", mutates_args=())
def _chain_rule_bce_loss_backward(grad: Tensor, zt: Tensor, target_t: Tensor, pos_weight: Tensor | None,
                                  parent: Tensor, w: Tensor, log_p: Tensor, log_q: Tensor, nodes: Tensor,
                                  ks: list[int], widths: list[int], reduction: str, ignore_index: float | None,
                                  need_input: bool, need_target: bool) -> tuple[Tensor, Tensor]:
    """The eager Function's written backward (one walk back), given each term's share of ``grad``; labels-major."""
    with kernel_dispatch():
        clean, valid = target_mask(target_t, ignore_index)
        g = reduce_valid_backward(grad, tuple(zt.shape), reduction, valid)
        # the kernel takes samples-major views and works on their (contiguous) transposes
        grad_input, grad_target = K.chain_bce_backward(zt.t(), clean.to(zt.dtype).t(), pos_weight,
                                                       K.ChainWalk(log_p, log_q, parent, w), nodes,
                                                       tuple(zip(ks, widths)), g.t(), need_input, need_target)
        empty = zt.new_empty(0)
        return (empty if grad_input is None else grad_input.t().contiguous(),
                empty if grad_target is None else grad_target.t().to(target_t.dtype).contiguous())


@_chain_rule_bce_loss_backward.register_fake
def _(grad: Tensor, zt: Tensor, target_t: Tensor, pos_weight: Tensor | None, parent: Tensor, w: Tensor,
      log_p: Tensor, log_q: Tensor, nodes: Tensor, ks: list[int], widths: list[int], reduction: str,
      ignore_index: float | None, need_input: bool, need_target: bool) -> tuple[Tensor, Tensor]:
    return _grad_like(zt, need_input), _grad_like(target_t, need_target)


def _chain_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    zt, target_t, pos_weight, nodes, _, ks, widths, reduction, ignore_index = inputs
    ctx.save_for_backward(zt, target_t, pos_weight, *output[1:], nodes)
    ctx.ks, ctx.widths, ctx.reduction, ctx.ignore_index = ks, widths, reduction, ignore_index


def _chain_back(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    zt, target_t, pos_weight, parent, w, log_p, log_q, nodes = ctx.saved_tensors
    need_input, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_input, grad_target = _chain_rule_bce_loss_backward(grad.contiguous(), zt, target_t, pos_weight, parent, w,
                                                            log_p, log_q, nodes, ctx.ks, ctx.widths, ctx.reduction,
                                                            ctx.ignore_index, need_input, need_target)
    return (_if_needed(need_input, grad_input), _if_needed(need_target, grad_target), *(None,) * 7)


_chain_rule_bce_loss.register_autograd(_chain_back, setup_context=_chain_setup)
