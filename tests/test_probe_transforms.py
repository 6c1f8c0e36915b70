"""Probe suite: every PyTorch transform a user applies to the hierarchy's losses and layers — torch.func.grad,
torch.func.jvp and per-sample gradients with vmap(grad(...)) (what differential-privacy training needs), each
checked against a plain loop or plain autograd."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from hierloss import (
    ChainRule,
    ChainRuleBCELoss,
    ConditionalBCELoss,
    Hierarchy,
    LabelGraphRefinement,
    MaxConstraint,
    MCLoss,
)

H = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "f": []})
C = H.num_labels


def _targets(n: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return H.propagate((torch.rand(n, C, generator=gen) < 0.3).double())


def _losses(validate_args: bool) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Per-sample-friendly losses ``f(logits (N, C), target (N, C)) -> scalar`` over every module of the engine."""
    mcm, chain = MaxConstraint(H), ChainRule(H)
    refine = LabelGraphRefinement(C, H).double()
    return {
        "MCLoss": MCLoss(H, validate_args=validate_args, reduction="sum"),
        "ChainRuleBCELoss": ChainRuleBCELoss(H, validate_args=validate_args, reduction="sum"),
        "ConditionalBCELoss": ConditionalBCELoss(H, validate_args=validate_args, reduction="sum"),
        "MaxConstraint": lambda x, y: (mcm(torch.sigmoid(x)) * (1 + y)).sum(),
        "ChainRule": lambda x, y: (chain(x) * (1 + y)).sum(),
        "LabelGraphRefinement": lambda x, y: (refine(x) * (1 + y)).sum(),
    }


@pytest.mark.parametrize("name", list(_losses(False)))
@pytest.mark.parametrize("validate_args", [False, True])
def test_per_sample_gradients(name: str, validate_args: bool) -> None:
    """vmap(grad(loss)) over samples equals a loop of single-sample autograd gradients (validate_args=True included:
    a target batched by vmap is not read back)."""
    loss = _losses(validate_args)[name]
    x = torch.randn(6, C, dtype=torch.float64)
    y = _targets(6)

    def one(xi: Tensor, yi: Tensor) -> Tensor:
        return loss(xi.unsqueeze(0), yi.unsqueeze(0))

    batched = torch.func.vmap(torch.func.grad(one))(x, y)
    looped = torch.stack([torch.autograd.grad(one(xi := x[i].clone().requires_grad_(), y[i]), xi)[0]
                          for i in range(6)])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize("name", list(_losses(False)))
def test_func_grad_and_jvp(name: str) -> None:
    """torch.func.grad equals autograd, and torch.func.jvp equals the gradient dotted with the tangent."""
    loss = _losses(True)[name]
    x, t = torch.randn(4, C, dtype=torch.float64), torch.randn(4, C, dtype=torch.float64)
    y = _targets(4, seed=1)
    (ref,) = torch.autograd.grad(loss(xr := x.clone().requires_grad_(), y), xr)
    torch.testing.assert_close(torch.func.grad(loss)(x, y), ref)
    _, tangent = torch.func.jvp(lambda v: loss(v, y), (x,), (t,))
    torch.testing.assert_close(tangent, (ref * t).sum())


@pytest.mark.parametrize("name", ["MCLoss", "ChainRuleBCELoss", "ConditionalBCELoss"])
def test_gradient_to_a_target_that_requires_grad(name: str) -> None:
    """A soft target that requires grad (distillation) gets BCE's gradient, -(logit-space term)/count, from every
    hierarchy loss, including the written backward of ChainRuleBCELoss, checked against the formula's own values."""
    from hierloss.propagation import LevelPlan, chain_rule_log, constrained_logits

    x = torch.randn(4, C, dtype=torch.float64)
    y = _targets(4, seed=3).mul(0.8).add(0.1).requires_grad_()  # soft, in (0, 1)
    loss = {"MCLoss": MCLoss(H), "ChainRuleBCELoss": ChainRuleBCELoss(H),
            "ConditionalBCELoss": ConditionalBCELoss(H)}[name]
    (grad,) = torch.autograd.grad(loss(x, y), y)
    with torch.no_grad():
        if name == "ChainRuleBCELoss":
            log_p, log_q = chain_rule_log(x, LevelPlan.build(H, "parents"))
            expected = -(log_p - log_q) / x.numel()
        elif name == "MCLoss":
            expected = -constrained_logits(x, y > 0.5, LevelPlan.build(H, "descendants")) / x.numel()
        else:  # kept terms only: those whose parents are all positive
            parents_ok = torch.ones_like(x, dtype=torch.bool)
            for p, c in H.edge_indices:
                parents_ok[:, c] &= y[:, p] > 0.5
            expected = torch.where(parents_ok, -x, 0.0) / parents_ok.sum()
    torch.testing.assert_close(grad, expected)
