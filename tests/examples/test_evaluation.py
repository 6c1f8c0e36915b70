"""Tests for chexpert_example.evaluation against scikit-learn and naive loops (core environment)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from chexpert_example.evaluation import score
from sklearn.metrics import roc_auc_score

from hierloss.hierarchies import chexpert


def naive_violation_rate(probs: np.ndarray, threshold: float | None) -> float:
    hierarchy = chexpert()
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
    result = score(torch.from_numpy(probs), torch.from_numpy(target), chexpert(), loss=0.25)
    keep = target.sum(0) > 0
    expected = roc_auc_score(target[:, keep], probs[:, keep], average="weighted")
    assert result.weighted_auroc == pytest.approx(expected, abs=1e-12)
    labels = chexpert().labels
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
    result = score(torch.from_numpy(probs), torch.from_numpy(target), chexpert())
    values, weights = [], []
    for j, name in enumerate(chexpert().labels):
        known = ~np.isnan(target[:, j])
        expected = roc_auc_score(target[known, j], probs[known, j])
        assert result.per_label_auroc[name] == pytest.approx(expected, abs=1e-12)
        values.append(expected)
        weights.append(np.nansum(target[:, j]))
    assert result.weighted_auroc == pytest.approx(np.average(values, weights=weights), abs=1e-12)


def test_score_without_any_two_class_label_reports_none() -> None:
    """When no label has both classes the weighted AUROC is NaN, written to JSON as None."""
    result = score(torch.rand(5, 21), torch.zeros(5, 21), chexpert())
    assert math.isnan(result.weighted_auroc)
    assert result.as_dict()["weighted_auroc"] is None
