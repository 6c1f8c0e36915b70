"""Tests for hierloss.losses._compiled: MCLoss and ChainRuleBCELoss as custom operators under torch.compile, against
eager mode, through torch.library.opcheck, and absent from torch.export's plain graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, fx

import hierloss.losses._compiled as C
from hierloss import ChainRuleBCELoss, Hierarchy, MCLoss
from hierloss.propagation import LevelPlan

DAG = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "e": ["f"], "iso": []})
LOSSES: dict[str, Callable[..., torch.nn.Module]] = {"MCLoss": MCLoss, "ChainRuleBCELoss": ChainRuleBCELoss}
OPERATORS = {"MCLoss": "hierloss::mc_loss", "ChainRuleBCELoss": "hierloss::chain_rule_bce_loss"}


def _target(masked: bool, seed: int) -> Tensor:
    """0/1 targets closed under the true-path rule; with ``masked``, NaN and -1 (ignored) entries too."""
    g = torch.Generator().manual_seed(seed)
    y = DAG.propagate((torch.rand(7, DAG.num_labels, generator=g) < 0.3).float())
    if masked:
        y[0, 1], y[2, 4], y[5, 0] = float("nan"), -1.0, -1.0
    return y


def _criterion(name: str, reduction: str, masked: bool) -> torch.nn.Module:
    extra: dict[str, Any] = {"pos_weight": torch.linspace(0.5, 2.0, DAG.num_labels)} if name != "MCLoss" else {}
    return LOSSES[name](DAG, reduction=reduction, ignore_index=-1.0 if masked else None, validate_args=False,
                        **(extra if masked else {}))


def _value_and_grads(loss: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, weight: Tensor,
                     target_grad: bool) -> tuple[Tensor, ...]:
    """The loss and its gradients to the logits (and to the target when it requires grad), through a weighted sum."""
    out = loss(x, y)
    wanted = (x, y) if target_grad else (x,)
    return out.detach(), *torch.autograd.grad((out * weight).sum() if out.ndim else out, wanted)


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_compiled_values_and_gradients_equal_eager(name: str, reduction: str, backend: str) -> None:
    """Compiled with fullgraph=True, the loss and its gradients equal eager mode's: clean targets, NaN and
    ignore_index targets (with pos_weight for ChainRuleBCELoss), and a target that requires grad."""
    for masked, target_grad in ((False, False), (True, False), (True, True), (False, True)):
        criterion = _criterion(name, reduction, masked)
        torch._dynamo.reset()
        compiled = torch.compile(criterion, fullgraph=True, backend=backend)
        x = torch.randn(7, DAG.num_labels, generator=torch.Generator().manual_seed(1)).requires_grad_()
        y = _target(masked, seed=2).requires_grad_(target_grad)
        weight = torch.rand(7, DAG.num_labels)
        got = _value_and_grads(compiled, x, y, weight, target_grad)
        want = _value_and_grads(criterion, x, y, weight, target_grad)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
            assert g.is_contiguous()


@pytest.mark.parametrize("name", LOSSES)
def test_compiled_graph_calls_one_operator(name: str) -> None:
    """Under torch.compile each loss is its one operator (the masks, BCE and reduction are not traced);
    torch.export traces plain operations instead, with the same value."""
    graphs: list[fx.GraphModule] = []

    def record(gm: fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    criterion = _criterion(name, "mean", masked=True)
    x, y = torch.randn(7, DAG.num_labels), _target(True, seed=3)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(criterion, fullgraph=True, backend=record)(x, y), criterion(x, y))
    called = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    assert {t for t in called if "hierloss" in t} == {OPERATORS[name].replace("::", ".") + ".default"}
    exported = torch.export.export(criterion, (x, y))
    assert not [n for n in exported.graph.nodes if "hierloss" in str(n.target)]
    torch.testing.assert_close(exported.module()(x, y), criterion(x, y))


def _groups(plan: LevelPlan) -> tuple[list[int], list[int]]:
    return [k for k, _ in plan.groups], [w for _, w in plan.groups]


def test_operators_pass_opcheck() -> None:
    """torch.library.opcheck (schema, fake tensors, autograd registration, AOT dispatch) passes for the four loss
    operators, for every reduction, with NaN and ignored targets and with pos_weight."""
    up, par = LevelPlan.build(DAG, "descendants"), LevelPlan.build(DAG, "parents")
    zt = torch.randn(DAG.num_labels, 5, requires_grad=True)
    target_t = _target(True, seed=4)[:5].t().contiguous().requires_grad_()
    for reduction in ("mean", "sum", "none"):
        for ignore_index in (None, -1.0):
            torch.library.opcheck(C._mc_loss, (zt, target_t, up.nodes, up.neighbours, *_groups(up), reduction,
                                               ignore_index))
            for pos_weight in (None, torch.rand(DAG.num_labels)):
                torch.library.opcheck(C._chain_rule_bce_loss, (zt, target_t, pos_weight, par.nodes, par.neighbours,
                                                               *_groups(par), reduction, ignore_index))
    z, y = zt.detach(), target_t.detach()
    for reduction, grad in (("mean", torch.tensor(0.5)), ("none", torch.randn(DAG.num_labels, 5))):
        _, logits, _ = C._mc_loss(z, y, up.nodes, up.neighbours, *_groups(up), reduction, -1.0)
        torch.library.opcheck(C._mc_loss_backward, (grad, logits, y, reduction, -1.0, True, True))
        walk = C._chain_rule_bce_loss(z, y, None, par.nodes, par.neighbours, *_groups(par), reduction, -1.0)[1:]
        torch.library.opcheck(C._chain_rule_bce_loss_backward, (grad, z, y, None, *walk, par.nodes, *_groups(par),
                                                                reduction, -1.0, True, True))
