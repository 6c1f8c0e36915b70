"""Tests for hierloss.recipes: the table of approaches, each recipe's criterion, head and stages, and the docs' copy."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import hierloss
from hierloss import ChainRule, Hierarchy, MaxConstraint, losses, recipes
from hierloss.losses import ChainRuleBCELoss, ConditionalBCELoss, HierarchyPenalty
from hierloss.metrics import coherent, violation_rate
from hierloss.recipes import PenalisedLoss, StagedLoss

ROOT = Path(__file__).resolve().parents[1]
#: A DAG with a label of two parents, and a second root.
H = Hierarchy.from_edges([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("f", "g")])
SIGMOID_RECIPES = [name for name in recipes.names() if recipes.spec(name).head == "sigmoid"]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(16, H.num_labels, generator=gen)
    target = H.propagate((torch.rand(16, H.num_labels, generator=gen) < 0.3).float())
    return logits, target


def test_the_table_holds_the_issue_s_approaches_with_their_heads() -> None:
    """The table names every approach of the issue, with its head and whether it is coherent by construction."""
    expected = {"bce": "sigmoid", "bce+coherent": "coherent", "hbce": "sigmoid", "hbce-hinge": "sigmoid",
                "hbce-hard": "sigmoid", "bce+penalty": "sigmoid", "mcloss": "max-constraint",
                "conditional": "chain-rule", "conditional-ft": "chain-rule", "asl": "sigmoid", "focal": "sigmoid",
                "zlpr": "sigmoid", "msml": "sigmoid"}
    assert {name: recipes.RECIPES[name].head for name in recipes.names()} == expected
    assert recipes.names() == tuple(recipes.RECIPES)
    for name, found in recipes.RECIPES.items():
        assert found.name == name and found.title and found.description.endswith(".")
        assert found.coherent_by_construction is (found.head != "sigmoid")
        assert found.head in recipes.HEADS and found.training in recipes.RECIPES
        assert found.stages[0].share is None and all(s.share is not None for s in found.stages[1:])
    assert recipes.spec("bce+coherent").training == "bce"
    with_head = dataclasses.replace(recipes.spec("bce"), name="bce+coherent", title="BCE + coherent", head="coherent",
                                    description=recipes.spec("bce+coherent").description)
    assert recipes.spec("bce+coherent") == with_head  # the table's entry is the rule's NAME+coherent


@pytest.mark.parametrize("name", [*recipes.names(), *(name + recipes.COHERENT for name in SIGMOID_RECIPES
                                                       if name + recipes.COHERENT not in recipes.RECIPES)])
def test_every_recipe_trains_a_step_and_predicts_as_it_says(name: str) -> None:
    """Each recipe builds for a DAG, its criterion gives a finite loss and gradient, its head gives (N, C) scores in
    [0, 1], and where it says it is coherent by construction no child scores above a parent at any threshold."""
    recipe = recipes.get(name, H)
    model = nn.Linear(5, H.num_labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    _, target = _batch()
    recipe.set_epoch(0, 1)
    loss = recipe.criterion(model(features), target)
    loss.backward()
    optimizer.step()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        scores = recipe.head(3 * model(features))
    assert scores.shape == (16, H.num_labels) and ((scores >= 0) & (scores <= 1)).all()
    if recipe.coherent_by_construction:
        assert violation_rate(scores, H, threshold=None) == 0
    else:
        assert recipe.spec.head == "sigmoid"
        torch.testing.assert_close(scores, torch.sigmoid(3 * model(features)).detach())


@pytest.mark.parametrize(("name", "kind", "settings"), [
    ("bce", nn.BCEWithLogitsLoss, {}),
    ("bce+coherent", nn.BCEWithLogitsLoss, {}),
    ("hbce", losses.HBCELoss, {"mode": "logit_hinge", "scale": 0.1}),
    ("hbce-hinge", losses.HBCELoss, {"mode": "hinge", "scale": 1.0}),
    ("hbce-hard", losses.HBCELoss, {"mode": "hard"}),
    ("bce+penalty", PenalisedLoss, {}),
    ("mcloss", losses.MCLoss, {}),
    ("conditional", ConditionalBCELoss, {}),
    ("conditional-ft", StagedLoss, {}),
    ("asl", losses.AsymmetricLoss, {}),
    ("focal", losses.FocalLoss, {}),
    ("zlpr", losses.ZLPRLoss, {}),
    ("msml", losses.MultiLabelSoftmaxLoss, {}),
])
def test_each_criterion_is_the_documented_loss(name: str, kind: type, settings: dict[str, object]) -> None:
    """Each recipe's criterion is the loss its table row names, with the library's defaults; the stage criterion
    text names that class."""
    recipe = recipes.get(name, H)
    assert type(recipe.criterion) is kind
    for key, value in settings.items():
        assert getattr(recipe.criterion, key) == value
    for stage, text in zip(recipe.stages, recipe.spec.stages, strict=True):  # the text names each stage's class
        assert text.criterion.split("(")[0] == (type(stage).__name__ if kind is not PenalisedLoss
                                                 else "BCEWithLogitsLoss"), name


def test_bce_plus_penalty_is_bce_plus_the_hierarchy_penalty() -> None:
    """'bce+penalty' is BCEWithLogitsLoss plus HierarchyPenalty(h) with its defaults, on the same logits."""
    logits, target = _batch(2)
    got = recipes.get("bce+penalty", H).criterion(logits, target)
    torch.testing.assert_close(got, nn.BCEWithLogitsLoss()(logits, target) + HierarchyPenalty(H)(logits))


def test_heads_compute_what_the_table_says() -> None:
    """'coherent' is metrics.coherent after the sigmoid (to the bit), 'max-constraint' MaxConstraint after it,
    'chain-rule' ChainRule on the logits, 'sigmoid' the sigmoid."""
    logits, _ = _batch(3)
    probs = torch.sigmoid(logits)
    assert torch.equal(recipes.get("bce+coherent", H).head(logits), coherent(probs, H))
    assert torch.equal(recipes.get("hbce+coherent", H).head(logits), coherent(probs, H))
    assert torch.equal(recipes.get("mcloss", H).head(logits), MaxConstraint(H)(probs))
    assert torch.equal(recipes.get("conditional", H).head(logits), ChainRule(H)(logits))
    assert torch.equal(recipes.get("hbce", H).head(logits), probs)
    assert recipes.HEADS == {"sigmoid": "torch.sigmoid(x)", "coherent": "coherent(torch.sigmoid(x), h)",
                             "max-constraint": "MaxConstraint(h)(torch.sigmoid(x))", "chain-rule": "ChainRule(h)(x)"}


@pytest.mark.parametrize(("epochs", "fine_tune"), [(1, 0), (2, 1), (5, 1), (10, 2), (67, 13), (106, 21), (123, 25)])
def test_conditional_ft_fine_tunes_the_last_fifth(epochs: int, fine_tune: int) -> None:
    """conditional-ft fine-tunes round(epochs / 5) epochs, at least one, after at least one conditional epoch; the
    one-stage recipes train every epoch with their criterion."""
    found = recipes.spec("conditional-ft")
    assert found.stage_epochs(epochs) == (epochs - fine_tune, fine_tune)
    assert [found.stage_at(e, epochs) for e in range(epochs)] == [0] * (epochs - fine_tune) + [1] * fine_tune
    assert recipes.spec("mcloss").stage_epochs(epochs) == (epochs,)


def test_set_epoch_switches_the_criterion_at_the_fine_tuning_epoch() -> None:
    """recipe.set_epoch moves conditional-ft's criterion to ChainRuleBCELoss at epoch epochs - fine-tune epochs, and
    back; the loss is then exactly that stage's loss."""
    recipe = recipes.get("conditional-ft", H)
    logits, target = _batch(4)
    assert [type(stage) for stage in recipe.stages] == [ConditionalBCELoss, ChainRuleBCELoss]
    seen = []
    for epoch in range(10):
        seen.append(recipe.set_epoch(epoch, 10))
        want = ConditionalBCELoss(H) if epoch < 8 else ChainRuleBCELoss(H)
        torch.testing.assert_close(recipe.criterion(logits, target), want(logits, target))
    assert seen == [0] * 8 + [1] * 2
    assert recipe.set_epoch(0, 10) == 0 and recipe.criterion.stage == 0  # type: ignore[union-attr]
    assert recipes.get("mcloss", H).set_epoch(9, 10) == 0


def test_staged_loss_branch_free_gives_the_same_values_and_gradients() -> None:
    """The branch-free form (every stage computed, weighed by a 0/1 buffer, for CUDA graphs) gives the value and
    gradient of the current stage, in both stages."""
    logits, target = _batch(5)
    stages = [ConditionalBCELoss(H), ChainRuleBCELoss(H)]
    branched, branch_free = StagedLoss(stages), StagedLoss(stages, branch_free=True)
    for index, want in enumerate(stages):
        x = logits.clone().requires_grad_()
        (g_want,) = torch.autograd.grad(want(x, target), x)
        for criterion in (branched, branch_free):
            criterion.set_stage(index)
            value = criterion(x, target)
            (g_got,) = torch.autograd.grad(value, x)
            torch.testing.assert_close(value, want(x, target))
            torch.testing.assert_close(g_got, g_want)


def test_recipe_to_moves_the_criterion_and_the_head() -> None:
    """recipe.to(...) moves every buffer and parameter of the criterion and the head, and returns the recipe."""
    for name in ("bce+penalty", "mcloss", "conditional-ft", "bce+coherent"):
        recipe = recipes.get(name, H)
        assert recipe.to("meta") is recipe
        tensors = [*recipe.criterion.buffers(), *recipe.criterion.parameters(), *recipe.head.buffers()]
        assert tensors and all(t.device.type == "meta" for t in tensors), name
    recipe = recipes.get("conditional-ft", H).to(torch.float64)
    assert recipe.criterion.weight.dtype == torch.float64  # type: ignore[union-attr]


def test_errors_name_the_offender() -> None:
    """An unknown name lists the known ones; '+coherent' after a coherent recipe, a bad hierarchy, a bad epoch or
    stage are refused with a message naming them."""
    known = ", ".join(recipes.names())
    with pytest.raises(ValueError, match=re.escape(f"unknown recipe 'nope'; expected one of {known} (or "
                                                   "NAME+coherent for a recipe whose head is the sigmoid)")):
        recipes.get("nope", H)
    with pytest.raises(ValueError, match=re.escape("recipe 'mcloss' is coherent by construction (head "
                                                   "'max-constraint'): 'mcloss+coherent' is not a recipe")):
        recipes.spec("mcloss+coherent")
    with pytest.raises(TypeError, match="Expected a Hierarchy, got dict"):
        recipes.get("bce", {"a": ["b"]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected a recipe name \(str\), got int"):
        recipes.spec(3)  # type: ignore[arg-type]
    recipe = recipes.get("conditional-ft", H)
    with pytest.raises(ValueError, match=re.escape("epoch must be in [0, 5), got 5")):
        recipe.set_epoch(5, 5)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        recipe.spec.stage_epochs(0)
    with pytest.raises(ValueError, match=re.escape("stage must be in [0, 2), got 2")):
        recipe.criterion.set_stage(2)  # type: ignore[operator]
    with pytest.raises(ValueError, match="`stages` is empty"):
        StagedLoss([])


def test_validate_args_reaches_the_losses() -> None:
    """get(..., validate_args=False) builds hierloss's losses without value checks (for CUDA graphs)."""
    recipe = recipes.get("conditional-ft", H, validate_args=False)
    assert all(stage.validate_args is False for stage in recipe.stages)
    assert recipes.get("hbce", H).criterion.validate_args is True


def test_the_module_is_reachable_lazily_and_imports_no_torch() -> None:
    """hierloss.recipes is an attribute of the package, and importing it (the table) does not import torch."""
    assert hierloss.recipes is recipes
    code = "import sys, hierloss.recipes as r; r.names(); r.spec('hbce+coherent'); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "False"


def _docs_table() -> list[list[str]]:
    """The rows of the "choosing an approach" table of docs/losses.md, as cells."""
    section = (ROOT / "docs" / "losses.md").read_text(encoding="utf-8").split("## Choosing an approach", 1)[1]
    section = section.split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def test_docs_choosing_table_is_the_recipe_table() -> None:
    """The docs' "choosing an approach" table lists exactly the recipes, in table order, each with its criteria,
    its head (as HEADS writes it) and whether it is coherent by construction."""
    rows = _docs_table()
    assert [row[0] for row in rows] == [f"`{name}`" for name in recipes.names()]
    for name, train_with, predict_with, is_coherent, *_ in rows:
        found = recipes.spec(name.strip("`"))
        assert all(f"`{stage.criterion}`" in train_with for stage in found.stages), name
        assert predict_with == f"`{recipes.HEADS[found.head]}`", name
        assert is_coherent == ("yes" if found.coherent_by_construction else "no"), name
