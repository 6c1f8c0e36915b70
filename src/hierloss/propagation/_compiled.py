"""The engine as custom operators, for code under ``torch.compile``.

A compiler that traced the walks would unroll every group of every level into its graph (minutes of compilation
at Gene Ontology size) and, on the CPU, run them slower than eager. As custom operators they stay opaque: the
compiled graph calls the same kernels as eager mode, with their written backwards, and no graph break. They hold
the same code as the autograd Functions (:mod:`hierloss.propagation._kernels`), run below autograd
(:func:`~hierloss._custom_ops.kernel_dispatch`); forward mode and vmap are the eager Functions' (a compiled graph
differentiates in reverse mode). The max and the min leave the transpose of their input to the compiled graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import hierloss.propagation._kernels as K
from hierloss._custom_ops import kernel_dispatch
from hierloss.propagation._plan import LevelPlan

__all__ = ["chain_rule", "chain_rule_bce", "constrained_logits", "extremum", "extremum_values"]


def _plan(nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int], num_labels: int) -> LevelPlan:
    return LevelPlan(nodes, neighbours, tuple(zip(ks, widths)), num_labels, "descendants")


# ------------------------------------------------------------------------------------------------- max and min
# Both take their rows labels-major, ``(C, M)``, transposed by the compiled graph: Inductor's transposes run several
# times faster than ATen's, which the eager Functions pay inside the kernels.
@torch.library.custom_op("hierloss::extremum", mutates_args=())
def extremum(xt: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
             largest: bool) -> tuple[Tensor, Tensor]:
    """``(C, M)`` → (the max (min) over each label's closure, its int64 arg), both ``(M, C)`` like the eager
    Function's: Inductor would fuse a transposed output into what follows it, and a loss's backward fused through a
    transposed read runs several times slower than this transpose."""
    with kernel_dispatch():
        out = xt.clone(memory_format=torch.contiguous_format)
        arg = K.walk_with_arg(out, _plan(nodes, neighbours, ks, widths, xt.shape[0]), largest)
        return out.t().contiguous(), K.rows_long(arg)


@extremum.register_fake
def _(xt: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
      largest: bool) -> tuple[Tensor, Tensor]:
    c, m = xt.shape
    return xt.new_empty((m, c)), xt.new_empty((m, c), dtype=torch.long)


def _save_arg(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])


def _scatter_back(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
    (arg,) = ctx.saved_tensors
    return K.scatter_to_arg(arg, grad_out), None, None, None, None, None


def _extremum_back(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
    (arg,) = ctx.saved_tensors
    return K.scatter_to_arg(arg, grad_out).t(), None, None, None, None, None  # that of the labels-major rows


extremum.register_autograd(_extremum_back, setup_context=_save_arg)


@torch.library.custom_op("hierloss::extremum_values", mutates_args=())
def extremum_values(xt: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
                    largest: bool) -> Tensor:
    """The values of :func:`extremum` only (no arg: nothing to differentiate), labels-major ``(C, M)`` in and
    out."""
    with kernel_dispatch():
        out = xt.clone(memory_format=torch.contiguous_format)
        K.walk_values(out, _plan(nodes, neighbours, ks, widths, xt.shape[0]), largest)
        return out


@extremum_values.register_fake
def _(xt: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int], largest: bool) -> Tensor:
    return torch.empty_like(xt, memory_format=torch.contiguous_format)


@torch.library.custom_op("hierloss::constrained_logits", mutates_args=())
def constrained_logits(z: Tensor, positive: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
                       widths: list[int]) -> tuple[Tensor, Tensor]:
    with kernel_dispatch():
        return K.constrained_forward(z, positive, _plan(nodes, neighbours, ks, widths, z.shape[1]))


@constrained_logits.register_fake
def _(z: Tensor, positive: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
      widths: list[int]) -> tuple[Tensor, Tensor]:
    return torch.empty_like(z, memory_format=torch.contiguous_format), z.new_empty(z.shape, dtype=torch.long)


constrained_logits.register_autograd(_scatter_back, setup_context=_save_arg)


# ---------------------------------------------------------------------------------------------- the chain rule
@torch.library.custom_op("hierloss::chain_rule", mutates_args=())
def chain_rule(z: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
               widths: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    with kernel_dispatch():
        walk = K.chain_walk(z.t().contiguous(), _plan(nodes, neighbours, ks, widths, z.shape[1]))
        return walk.log_p.t().contiguous(), walk.log_q.t().contiguous(), walk.parent, walk.w


@chain_rule.register_fake
def _(z: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
      widths: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g, m = nodes.shape[0], z.shape[0]
    return (torch.empty_like(z, memory_format=torch.contiguous_format),
            torch.empty_like(z, memory_format=torch.contiguous_format),
            z.new_empty((g, m), dtype=torch.long), z.new_empty((g, m)))


@torch.library.custom_op("hierloss::chain_rule_backward", mutates_args=())
def chain_rule_backward(z: Tensor, parent: Tensor, w: Tensor, nodes: Tensor, ks: list[int], widths: list[int],
                        grad_p: Tensor | None, grad_q: Tensor | None) -> Tensor:
    with kernel_dispatch():
        return K.chain_backward(z, parent, w, nodes, tuple(zip(ks, widths)), grad_p, grad_q).contiguous()


@chain_rule_backward.register_fake
def _(z: Tensor, parent: Tensor, w: Tensor, nodes: Tensor, ks: list[int], widths: list[int],
      grad_p: Tensor | None, grad_q: Tensor | None) -> Tensor:
    return torch.empty_like(z, memory_format=torch.contiguous_format)


def _chain_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    z, nodes, _, ks, widths = inputs
    ctx.save_for_backward(z, output[2], output[3], nodes)
    ctx.ks, ctx.widths = ks, widths


def _chain_back(ctx: Any, grad_p: Tensor | None, grad_q: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
    z, parent, w, nodes = ctx.saved_tensors
    return chain_rule_backward(z, parent, w, nodes, ctx.ks, ctx.widths, grad_p, grad_q), None, None, None, None


chain_rule.register_autograd(_chain_back, setup_context=_chain_setup)


@torch.library.custom_op("hierloss::chain_rule_bce", mutates_args=())
def chain_rule_bce(z: Tensor, y: Tensor, pos_weight: Tensor | None, nodes: Tensor, neighbours: Tensor,
                   ks: list[int], widths: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    with kernel_dispatch():
        walk = K.chain_walk(z.t().contiguous(), _plan(nodes, neighbours, ks, widths, z.shape[1]))
        loss = K.chain_bce_terms(walk.log_p, walk.log_q, y.t(), pos_weight).t().contiguous()
        return loss, walk.parent, walk.w, walk.log_p, walk.log_q


@chain_rule_bce.register_fake
def _(z: Tensor, y: Tensor, pos_weight: Tensor | None, nodes: Tensor, neighbours: Tensor, ks: list[int],
      widths: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    g, (m, c) = nodes.shape[0], z.shape
    return (torch.empty_like(z, memory_format=torch.contiguous_format), z.new_empty((g, m), dtype=torch.long),
            z.new_empty((g, m)), z.new_empty((c, m)), z.new_empty((c, m)))


@torch.library.custom_op("hierloss::chain_rule_bce_backward", mutates_args=())
def chain_rule_bce_backward(z: Tensor, y: Tensor, pos_weight: Tensor | None, parent: Tensor, w: Tensor,
                            log_p: Tensor, log_q: Tensor, nodes: Tensor, ks: list[int], widths: list[int],
                            grad: Tensor, need_z: bool, need_y: bool) -> tuple[Tensor, Tensor]:
    with kernel_dispatch():
        grad_z, grad_y = K.chain_bce_backward(z, y, pos_weight, K.ChainWalk(log_p, log_q, parent, w), nodes,
                                              tuple(zip(ks, widths)), grad, need_z, need_y)
        empty = z.new_empty(0)
        return (empty if grad_z is None else grad_z.contiguous()), (empty if grad_y is None else grad_y.contiguous())


@chain_rule_bce_backward.register_fake
def _(z: Tensor, y: Tensor, pos_weight: Tensor | None, parent: Tensor, w: Tensor, log_p: Tensor, log_q: Tensor,
      nodes: Tensor, ks: list[int], widths: list[int], grad: Tensor, need_z: bool,
      need_y: bool) -> tuple[Tensor, Tensor]:
    return (torch.empty_like(z, memory_format=torch.contiguous_format) if need_z else z.new_empty(0),
            torch.empty_like(y, memory_format=torch.contiguous_format) if need_y else z.new_empty(0))


def _bce_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    z, y, pos_weight, nodes, _, ks, widths = inputs
    ctx.save_for_backward(z, y, pos_weight, *output[1:], nodes)
    ctx.ks, ctx.widths = ks, widths


def _bce_back(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    z, y, pos_weight, parent, w, log_p, log_q, nodes = ctx.saved_tensors
    need_z, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_z, grad_y = chain_rule_bce_backward(z, y, pos_weight, parent, w, log_p, log_q, nodes, ctx.ks, ctx.widths,
                                             grad, need_z, need_y)
    return (grad_z if need_z else None), (grad_y if need_y else None), None, None, None, None, None


chain_rule_bce.register_autograd(_bce_back, setup_context=_bce_setup)
