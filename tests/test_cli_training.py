"""Tests for hierloss.cli._training: the small training loop of `hierloss demo`, over hierloss.recipes."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hierloss import recipes
from hierloss.cli._training import WEIGHT_DECAY, _fit, compare
from hierloss.datasets import make_hierarchical_classification
from hierloss.functional import chain_rule_probs
from hierloss.metrics import coherent

#: What `hierloss demo` passes: its parsed arguments.
SETTINGS = argparse.Namespace(hidden=32, dropout=0.1, lr=1e-3, batch_size=32, epochs=3, seed=0)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return make_hierarchical_classification(400, 10, depth=3, branching=2, dag=True, random_state=0)


def _tensors(data, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    return torch.as_tensor(data.X[:n], dtype=torch.float32), torch.as_tensor(data.Y[:n], dtype=torch.float32)


def test_compare_rows_heads_and_coherent_outputs(data) -> None:  # type: ignore[no-untyped-def]
    """One row per recipe's head, then one after `coherent` for a sigmoid head (the same model: same_model); every
    coherent output has no violation; the scores are sklearn's."""
    h = data.hierarchy
    results = compare(["bce", "hbce", "mcloss", "conditional-ft"], data.X[:300], data.Y[:300], data.X[300:],
                      data.Y[300:], h, SETTINGS)
    assert [(r.name, r.head, r.same_model) for r in results] == [
        ("BCE", "sigmoid", False), ("BCE + coherent", "coherent", True), ("HBCE", "sigmoid", False),
        ("HBCE + coherent", "coherent", True), ("MCLoss", "max-constraint", False),
        ("Conditional + fine-tuning (chain rule)", "chain-rule", False)]
    for r in results:
        assert 0 <= r.scores["auprc"] <= 1 and 0 <= r.scores["hf1"] <= 1 and r.train_s > 0
        if r.head != "sigmoid":
            assert r.scores["violation_05"] == 0 and r.scores["violation_any"] == 0
    assert results[0].train_s == results[1].train_s
    features, target = _tensors(data)
    model, _ = _fit(recipes.get("bce", h), features, target, SETTINGS, progress=False)
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.as_tensor(data.X[300:], dtype=torch.float32)))
    want = average_precision_score(data.Y[300:].ravel(), probs.numpy().ravel())
    assert results[0].scores["auprc"] == pytest.approx(want, abs=1e-6)
    assert results[1].scores["auprc"] == pytest.approx(average_precision_score(data.Y[300:].ravel(),
                                                                     coherent(probs, h).numpy().ravel()), abs=1e-6)


def test_hard_mode_trains_exactly_like_bce(data) -> None:  # type: ignore[no-untyped-def]
    """The reference penalty has zero gradient: same seed, same batches -> the weights of plain BCE, up to float32
    rounding (hierloss's fused BCE and PyTorch's differ in the last bit); the default penalty moves them."""
    features, target = _tensors(data)
    h = data.hierarchy
    bce, _ = _fit(recipes.get("bce", h), features, target, SETTINGS, progress=False)
    hard, _ = _fit(recipes.get("hbce-hard", h), features, target, SETTINGS, progress=False)
    default, _ = _fit(recipes.get("hbce", h), features, target, SETTINGS, progress=False)

    def gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
        return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters(), strict=True))

    assert gap(bce, hard) < 1e-6
    assert gap(bce, default) > 1e-4


def test_conditional_ft_trains_two_stages_and_predicts_through_the_chain_rule(data) -> None:  # type: ignore[no-untyped-def]
    """'conditional-ft' gives the weights of a plain loop that trains with ConditionalBCELoss, then with
    ChainRuleBCELoss for the last epoch of five (same seed, batches and optimiser), and is scored on the chain
    rule's marginals."""
    from hierloss import ChainRuleBCELoss, ConditionalBCELoss

    h = data.hierarchy
    settings = argparse.Namespace(**{**vars(SETTINGS), "dropout": 0.0, "epochs": 5})
    features, target = _tensors(data)
    torch.manual_seed(settings.seed)
    widths = [features.shape[1], settings.hidden, settings.hidden]
    model = torch.nn.Sequential(*[m for a, b in itertools.pairwise(widths)
                                  for m in (torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Dropout(0.0))],
                                torch.nn.Linear(settings.hidden, h.num_labels))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=WEIGHT_DECAY)
    order = torch.Generator().manual_seed(settings.seed)
    for epoch in range(settings.epochs):
        criterion = ConditionalBCELoss(h) if epoch < 4 else ChainRuleBCELoss(h)
        for idx in torch.split(torch.randperm(300, generator=order), settings.batch_size):
            optimizer.zero_grad()
            criterion(model(features[idx]), target[idx]).backward()
            optimizer.step()
    trained, _ = _fit(recipes.get("conditional-ft", h), features, target, settings, progress=False)
    for got, want in zip(trained.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    results = compare(["conditional-ft"], data.X[:300], data.Y[:300], data.X[300:], data.Y[300:], h, settings)
    with torch.no_grad():
        marginals = chain_rule_probs(trained(torch.as_tensor(data.X[300:], dtype=torch.float32)), h)
    assert [r.name for r in results] == ["Conditional + fine-tuning (chain rule)"]
    assert results[0].scores["violation_any"] == 0
    assert results[0].scores["auprc"] == pytest.approx(average_precision_score(data.Y[300:].ravel(),
                                                                     marginals.numpy().ravel()), abs=1e-5)


def test_unknown_recipe_and_bad_targets_are_refused_before_training(data) -> None:  # type: ignore[no-untyped-def]
    """An unknown recipe (listing the known ones), targets of the wrong shape or outside [0, 1] are refused before
    any training."""
    h = data.hierarchy
    with pytest.raises(ValueError, match="unknown recipe 'nope'; expected one of bce, bce"):
        compare(["bce", "nope"], data.X, data.Y, data.X, data.Y, h, SETTINGS)
    with pytest.raises(ValueError, match="shape"):
        compare(["bce"], data.X, data.Y[:, :-1], data.X, data.Y, h, SETTINGS)
    bad = data.Y.astype(np.float32)
    bad[3, 2] = 2.0
    with pytest.raises(ValueError, match=rf"column 2 \({h.labels[2]!r}\) holds 2\.0"):
        compare(["bce"], data.X, bad, data.X, data.Y, h, SETTINGS)
