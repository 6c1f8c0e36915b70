"""Tests for chexpert_example.criterion: ``--loss`` names to hierloss losses (core environment)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from chexpert_example import criterion as criterion_module
from chexpert_example.criterion import (
    BCE_FAMILY,
    FINE_TUNING,
    HBCE_MODES,
    LOSSES,
    OTHER_LOSSES,
    build_criterion,
    prediction_transform,
)

import hierloss
from hierloss import recipes
from hierloss.datasets import chexpert_hierarchy


def test_loss_choices_cover_the_issue() -> None:
    """bce, the HBCE modes and the other hierloss losses are all ``--loss`` choices."""
    for name in ("bce", "hbce", "hbce-hard", "hbce-soft", "hbce-hinge", "asl", "focal", "zlpr", "msml", "mcloss"):
        assert name in LOSSES


def test_bce_is_pytorch_bce_with_logits() -> None:
    """``bce`` equals ``F.binary_cross_entropy_with_logits`` (mean) on 0/1 targets."""
    torch.manual_seed(0)
    logits, target = torch.randn(8, 21), torch.randint(0, 2, (8, 21)).float()
    loss = build_criterion("bce", chexpert_hierarchy(), 0.7, scale=2.0)(logits, target)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, target))


def test_bce_leaves_nan_targets_out() -> None:
    """With NaN targets (policy 'ignore'), ``bce`` averages each sample over its known labels, then samples."""
    torch.manual_seed(1)
    logits, target = torch.randn(6, 21), torch.randint(0, 2, (6, 21)).float()
    target[0, :5] = float("nan")
    target[3, 10] = float("nan")
    known = ~torch.isnan(target)
    per_sample = [F.binary_cross_entropy_with_logits(logits[i][known[i]], target[i][known[i]]) for i in range(6)]
    loss = build_criterion("bce", chexpert_hierarchy(), 1.0)(logits, target)
    torch.testing.assert_close(loss, torch.stack(per_sample).mean())


def test_hbce_hard_is_the_paper_loss_with_bce_gradients() -> None:
    """``hbce-hard`` = BCE + λ Σ_e w_e 1[p_parent < 0.5 < p_child] (summed over edges), with BCE's gradient."""
    torch.manual_seed(2)
    hierarchy = chexpert_hierarchy()
    weights = torch.rand(hierarchy.num_edges, dtype=torch.float64)
    logits = (3 * torch.randn(16, 21)).requires_grad_(True)
    target = torch.randint(0, 2, (16, 21)).float()
    loss = build_criterion("hbce-hard", hierarchy, weights.tolist(), scale=0.4)(logits, target)
    p = torch.sigmoid(logits.detach())
    penalty = torch.zeros(16)
    for e, (parent, child) in enumerate(hierarchy.edges):
        i, j = hierarchy.labels.index(parent), hierarchy.labels.index(child)
        penalty += 0.4 * float(weights[e]) * ((p[:, i] < 0.5) & (p[:, j] > 0.5)).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
    torch.testing.assert_close(loss, (bce + penalty).mean())
    (grad,) = torch.autograd.grad(loss, logits)
    (bce_grad,) = torch.autograd.grad(bce.mean(), logits)
    torch.testing.assert_close(grad, bce_grad)


@pytest.mark.parametrize("name", list(HBCE_MODES))
def test_hbce_names_select_their_mode(name: str) -> None:
    """Each ``hbce-*`` name builds HBCELoss in its mode; plain ``hbce`` in HBCELoss's own default mode."""
    module = build_criterion(name, chexpert_hierarchy(), 1.0)
    assert isinstance(module, hierloss.HBCELoss)
    default = inspect.signature(hierloss.HBCELoss).parameters["mode"].default
    expected = {"hbce": default, "hbce-hard": "hard", "hbce-soft": "soft", "hbce-hinge": "hinge",
                "hbce-squared-hinge": "squared_hinge", "hbce-logit-hinge": "logit_hinge"}[name]
    assert module.mode == expected


def test_trainable_modes_push_a_violation_apart() -> None:
    """On a violated edge (parent low, child high) the trainable modes' penalty gradient raises the parent."""
    hierarchy = chexpert_hierarchy()
    logits = torch.zeros(1, 21)
    parent, child = hierarchy.labels.index("Cardiac"), hierarchy.labels.index("Cardiomegaly")
    logits[0, parent], logits[0, child] = -1.0, 1.0
    target = torch.full((1, 21), float("nan"))  # no BCE term: only the penalty acts
    for name in ("hbce", "hbce-soft", "hbce-hinge", "hbce-logit-hinge"):
        x = logits.clone().requires_grad_(True)
        build_criterion(name, hierarchy, 1.0)(x, target).backward()
        assert x.grad is not None and x.grad[0, parent] < 0 < x.grad[0, child], name


def test_build_criterion_errors() -> None:
    """Unknown names and ``add_penalty`` on a BCE-family loss raise ValueError naming the value."""
    with pytest.raises(ValueError, match=r"--loss must be one of .*got 'mse'"):
        build_criterion("mse", chexpert_hierarchy())
    with pytest.raises(ValueError, match=r"'hbce-soft' has its penalty built in"):
        build_criterion("hbce-soft", chexpert_hierarchy(), add_penalty="hinge")


def test_other_losses_are_the_recipes_of_one_stage() -> None:
    """Every --loss outside the BCE family is a one-stage recipe of hierloss.recipes built as the recipe builds it,
    and chain-rule-bce is the last stage of recipe conditional-ft."""
    hierarchy = chexpert_hierarchy()
    assert set(OTHER_LOSSES) == {"asl", "focal", "zlpr", "msml", "mcloss", "conditional"}
    assert (*BCE_FAMILY, *OTHER_LOSSES, FINE_TUNING) == LOSSES
    for name in OTHER_LOSSES:
        assert type(build_criterion(name, hierarchy)) is type(recipes.get(name, hierarchy).criterion), name
    fine_tuning = recipes.get("conditional-ft", hierarchy).stages[-1]
    assert type(build_criterion(FINE_TUNING, hierarchy)) is type(fine_tuning)


@pytest.mark.parametrize("name", [*OTHER_LOSSES, FINE_TUNING])
def test_other_losses_train(name: str) -> None:
    """asl / focal / zlpr / mcloss build from hierloss, give a finite loss and a gradient; + a penalty adds up."""
    torch.manual_seed(3)
    hierarchy = chexpert_hierarchy()
    logits = torch.randn(8, 21, requires_grad=True)
    target = torch.randint(0, 2, (8, 21)).float()
    base = build_criterion(name, hierarchy)
    loss = base(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.grad is not None
    combined = build_criterion(name, hierarchy, 0.5, scale=2.0, add_penalty="hinge")
    penalty = hierloss.HierarchyPenalty(hierarchy, edge_weight=0.5, scale=2.0, mode="hinge")
    torch.testing.assert_close(combined(logits, target), base(logits, target) + penalty(logits))


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_leaves_nan_targets_out(name: str) -> None:
    """With NaN targets (policy 'ignore') every ``--loss`` gives a finite loss and a finite gradient."""
    torch.manual_seed(4)
    logits = torch.randn(8, 21, requires_grad=True)
    target = torch.randint(0, 2, (8, 21)).float()
    target[::2, 3:9] = float("nan")
    loss = build_criterion(name, chexpert_hierarchy(), 0.5)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and torch.isfinite(logits.grad).all()


def test_prediction_transform_is_the_max_constraint_for_mcloss_only() -> None:
    """``mcloss`` predicts through MaxConstraint (every parent ≥ its children), ``conditional`` through the chain
    rule; the other losses use σ as is."""
    hierarchy = chexpert_hierarchy()
    assert all(criterion_module.prediction_transform(name, hierarchy) is None for name in LOSSES
               if name not in ("mcloss", "conditional", "chain-rule-bce"))
    transform = criterion_module.prediction_transform("mcloss", hierarchy)
    assert transform is not None
    probs = transform(torch.rand(32, 21))
    for parent, child in hierarchy.edges:
        i, j = hierarchy.labels.index(parent), hierarchy.labels.index(child)
        assert (probs[:, i] >= probs[:, j]).all(), (parent, child)


@pytest.mark.parametrize(("name", "loss_class"), [("conditional", "ConditionalBCELoss"),
                                                ("chain-rule-bce", "ChainRuleBCELoss")])
def test_conditional_training_predicts_with_the_chain_rule(name: str, loss_class: str) -> None:
    """--loss conditional builds hierloss's ConditionalBCELoss, --loss chain-rule-bce (its fine-tuning stage)
    ChainRuleBCELoss, and the predictions of both are the chain rule's marginals of the conditional sigmoid outputs
    (coherent by construction)."""
    hierarchy = chexpert_hierarchy()
    assert isinstance(build_criterion(name, hierarchy), getattr(hierloss, loss_class))
    transform = prediction_transform(name, hierarchy)
    assert transform is not None
    logits = torch.randn(5, hierarchy.num_labels) * 3
    torch.testing.assert_close(transform(torch.sigmoid(logits)), hierloss.ChainRule(hierarchy)(logits),
                               rtol=1e-5, atol=1e-6)
