"""The engine as custom operators, for code under ``torch.compile``.

A compiler that traced the walks would unroll every group of every level into its graph (minutes of compilation
at Gene Ontology size) and, on the CPU, run them slower than eager. As custom operators they stay opaque: the
compiled graph calls the same kernels as eager mode, with their written backwards, and no graph break. They hold
the same code as the autograd Functions (:mod:`hierloss.propagation._kernels`); forward mode and vmap are the
eager Functions' (a compiled graph differentiates in reverse mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import hierloss.propagation._kernels as K
from hierloss.propagation._plan import LevelPlan

__all__ = ["chain_rule", "chain_rule_bce", "constrained_logits", "extremum", "extremum_values"]


def _plan(nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int], num_labels: int) -> LevelPlan:
    return LevelPlan(nodes, neighbours, tuple(zip(ks, widths)), num_labels, "descendants")


# ------------------------------------------------------------------------------------------------- max and min
@torch.library.custom_op("hierloss::extremum", mutates_args=())
def extremum(x: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
             largest: bool) -> tuple[Tensor, Tensor]:
    return K.extremum_forward(x, _plan(nodes, neighbours, ks, widths, x.shape[1]), largest)


@extremum.register_fake
def _(x: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
      largest: bool) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape, dtype=torch.long)


@torch.library.custom_op("hierloss::extremum_values", mutates_args=())
def extremum_values(x: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int],
                    largest: bool) -> Tensor:
    return K.extremum_values(x, _plan(nodes, neighbours, ks, widths, x.shape[1]), largest)


@extremum_values.register_fake
def _(x: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int], widths: list[int], largest: bool) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("hierloss::constrained_logits", mutates_args=())
def constrained_logits(z: Tensor, positive: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
                       widths: list[int]) -> tuple[Tensor, Tensor]:
    return K.constrained_forward(z, positive, _plan(nodes, neighbours, ks, widths, z.shape[1]))


@constrained_logits.register_fake
def _(z: Tensor, positive: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
      widths: list[int]) -> tuple[Tensor, Tensor]:
    return torch.empty_like(z, memory_format=torch.contiguous_format), z.new_empty(z.shape, dtype=torch.long)


def _save_arg(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])


def _scatter_back(ctx: Any, grad_out: Tensor, grad_arg: Tensor | None) -> tuple[Tensor | None, ...]:
    (arg,) = ctx.saved_tensors
    return K.scatter_to_arg(arg, grad_out), None, None, None, None, None  # both operators take six inputs


extremum.register_autograd(_scatter_back, setup_context=_save_arg)
constrained_logits.register_autograd(_scatter_back, setup_context=_save_arg)


# ---------------------------------------------------------------------------------------------- the chain rule
@torch.library.custom_op("hierloss::chain_rule", mutates_args=())
def chain_rule(z: Tensor, nodes: Tensor, neighbours: Tensor, ks: list[int],
               widths: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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
