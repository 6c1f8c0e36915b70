"""Tests for chexpert_example.evaluation against scikit-learn and naive loops (core environment)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from chexpert_example.evaluation import GatheredRows, evaluate, score
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hierloss.datasets import chexpert_hierarchy


def naive_violation_rate(probs: np.ndarray, threshold: float | None) -> float:
    hierarchy = chexpert_hierarchy()
    flags = []
    for row in probs:
        violated = False
        for parent, child in hierarchy.edges:
            p, c = row[hierarchy.labels.index(parent)], row[hierarchy.labels.index(child)]
            violated |= (c > p) if threshold is None else (p < threshold < c)
        flags.append(violated)
    return float(np.mean(flags))


def test_score_matches_scikit_learn_and_a_naive_violation_count() -> None:
    """Weighted and per-label AUROC equal scikit-learn's; violation rates equal a loop over rows and edges."""
    rng = np.random.default_rng(0)
    target = (rng.random((200, 21)) < 0.3).astype(np.float64)
    target[:, 14] = 0.0  # 'Uncertain' all negative: no AUROC, left out of the average
    probs = np.clip(0.3 * target + rng.random((200, 21)) * 0.8, 0, 1)
    result = score(torch.from_numpy(probs), torch.from_numpy(target), chexpert_hierarchy(), loss=0.25)
    keep = target.sum(0) > 0
    expected = roc_auc_score(target[:, keep], probs[:, keep], average="weighted")
    assert result.weighted_auroc == pytest.approx(expected, abs=1e-12)
    assert result.macro_auroc == pytest.approx(roc_auc_score(target[:, keep], probs[:, keep], average="macro"),
                                               abs=1e-12)
    assert result.auroc("macro") == result.macro_auroc and result.auroc("weighted") == result.weighted_auroc
    labels = chexpert_hierarchy().labels
    for j, name in enumerate(labels):
        if keep[j]:
            assert result.per_label_auroc[name] == pytest.approx(roc_auc_score(target[:, j], probs[:, j]), abs=1e-12)
        else:
            assert result.per_label_auroc[name] is None
    assert result.violation_rate == pytest.approx(naive_violation_rate(probs, 0.5))
    assert result.violation_rate_any_threshold == pytest.approx(naive_violation_rate(probs, None))
    assert 0 < result.violation_rate < result.violation_rate_any_threshold <= 1
    assert result.as_dict()["loss"] == 0.25


def test_score_with_nan_targets_scores_each_label_on_its_known_rows() -> None:
    """NaN targets are left out label by label; the weighted average uses each label's known positives."""
    rng = np.random.default_rng(1)
    target = (rng.random((150, 21)) < 0.4).astype(np.float64)
    probs = np.clip(0.2 * target + rng.random((150, 21)), 0, 1)
    target[rng.random((150, 21)) < 0.15] = np.nan
    result = score(torch.from_numpy(probs), torch.from_numpy(target), chexpert_hierarchy())
    values, weights = [], []
    for j, name in enumerate(chexpert_hierarchy().labels):
        known = ~np.isnan(target[:, j])
        expected = roc_auc_score(target[known, j], probs[known, j])
        assert result.per_label_auroc[name] == pytest.approx(expected, abs=1e-12)
        values.append(expected)
        weights.append(np.nansum(target[:, j]))
    assert result.weighted_auroc == pytest.approx(np.average(values, weights=weights), abs=1e-12)


def test_score_without_any_two_class_label_reports_none() -> None:
    """When no label has both classes the weighted AUROC is NaN, written to JSON as None."""
    result = score(torch.rand(5, 21), torch.zeros(5, 21), chexpert_hierarchy())
    assert math.isnan(result.weighted_auroc)
    assert result.as_dict()["weighted_auroc"] is None


def test_evaluate_scores_a_model_as_score_does_on_its_outputs() -> None:
    """evaluate() (the library's streaming metrics) equals score() on σ(model(x)), with the loss averaged over
    samples and the rows returned in dataset order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 21))
    images = torch.randn(37, 5)
    target = (torch.rand(37, 21) < 0.3).float()
    loader = DataLoader(TensorDataset(images, target), batch_size=8)
    criterion = nn.BCEWithLogitsLoss()
    result = evaluate(model, loader, chexpert_hierarchy(), torch.device("cpu"), criterion=criterion)
    with torch.no_grad():
        logits = model(images)
    expected = score(torch.sigmoid(logits), target, chexpert_hierarchy(), float(criterion(logits, target)))
    assert result.scores.weighted_auroc == pytest.approx(expected.weighted_auroc, abs=1e-12)
    assert result.scores.macro_auroc == pytest.approx(expected.macro_auroc, abs=1e-12)
    for name, value in expected.per_label_auroc.items():
        assert result.scores.per_label_auroc[name] == pytest.approx(value, abs=1e-12)
    assert result.scores.violation_rate == expected.violation_rate
    assert result.scores.violation_rate_any_threshold == expected.violation_rate_any_threshold
    assert result.scores.loss == pytest.approx(expected.loss, rel=1e-6)
    torch.testing.assert_close(result.probs, torch.sigmoid(logits))
    torch.testing.assert_close(result.targets, target)
    assert result.index.tolist() == list(range(37))
    capped = evaluate(model, loader, chexpert_hierarchy(), torch.device("cpu"), postprocess=nn.Hardtanh(0.0, 0.5))
    torch.testing.assert_close(capped.probs, torch.sigmoid(logits).clamp(max=0.5))
    assert capped.scores.loss is None


def test_evaluate_refuses_nan_targets() -> None:
    """NaN targets (policy 'ignore' on an evaluation CSV) raise ValueError naming the cause."""
    target = torch.zeros(4, 21)
    target[1, 3] = float("nan")
    loader = DataLoader(TensorDataset(torch.randn(4, 5), target), batch_size=2)
    with pytest.raises(ValueError, match=r"evaluation needs 0/1 targets, got NaN"):
        evaluate(nn.Linear(5, 21), loader, chexpert_hierarchy(), torch.device("cpu"))


def test_gathered_rows_returns_rows_in_index_order() -> None:
    """Rows added out of order come back sorted by index, with the batch-size-weighted mean loss."""
    rows = GatheredRows(("probs",))
    rows.update(torch.tensor([2, 0]), torch.tensor([[1.0], [0.0]]), torch.tensor(0.5),
                probs=torch.tensor([[0.2], [0.9]]))
    rows.update(torch.tensor([1]), torch.tensor([[1.0]]), torch.tensor(2.0), probs=torch.tensor([[0.4]]))
    out = rows.compute()
    assert out["index"].tolist() == [0, 1, 2]
    assert out["probs"].flatten().tolist() == pytest.approx([0.9, 0.4, 0.2])
    assert out["target"].flatten().tolist() == [0.0, 1.0, 1.0]
    assert float(out["loss"]) == pytest.approx((0.5 * 2 + 2.0) / 3)
    with pytest.raises(ValueError, match=r"Expected the columns \('probs',\), got \('mean',\)"):
        rows.update(torch.tensor([3]), torch.tensor([[1.0]]), mean=torch.tensor([[0.4]]))
