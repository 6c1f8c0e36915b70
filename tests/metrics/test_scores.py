"""Tests for hierloss.metrics.scores: equal to scikit-learn to 1e-6, with the single-class rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from hierloss.metrics import auroc, average_precision


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 60), st.integers(1, 6), st.sampled_from([1, 2, 100]))
def test_equal_to_sklearn(seed: int, n: int, c: int, rounding: int) -> None:
    """Per-label, weighted, macro and micro values equal scikit-learn's (ties from rounding included)."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.random((n, c)), 1 if rounding == 1 else 2)
    y = (rng.random((n, c)) < 0.4).astype(int)
    per_auc = auroc(p, y, average=None).numpy()
    per_ap = average_precision(p, y, average=None).numpy()
    ok_auc = [j for j in range(c) if 0 < y[:, j].sum() < n]
    ok_ap = [j for j in range(c) if y[:, j].sum() > 0]
    for j in range(c):
        if j in ok_auc:
            assert per_auc[j] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-6)
        else:
            assert np.isnan(per_auc[j])
        if j in ok_ap:
            assert per_ap[j] == pytest.approx(average_precision_score(y[:, j], p[:, j]), abs=1e-6)
        else:
            assert np.isnan(per_ap[j])
    if ok_auc:
        for avg in ("weighted", "macro"):
            want = roc_auc_score(y[:, ok_auc], p[:, ok_auc], average=avg) if len(ok_auc) > 1 else \
                roc_auc_score(y[:, ok_auc[0]], p[:, ok_auc[0]])
            assert auroc(p, y, average=avg).item() == pytest.approx(want, abs=1e-6)
    if y.sum() > 0:
        assert average_precision(p, y).item() == pytest.approx(average_precision_score(y.ravel(), p.ravel()), abs=1e-6)


def test_single_class_labels_never_crash() -> None:
    """Labels with one class are NaN per label and skipped in averages; all-single-class gives NaN."""
    y = np.array([[1, 0], [1, 1], [1, 0]])
    p = np.array([[0.1, 0.2], [0.4, 0.9], [0.3, 0.1]])
    assert np.isnan(auroc(p, y, average=None)[0].item())
    assert auroc(p, y).item() == pytest.approx(1.0)
    assert np.isnan(auroc(p[:, :1], y[:, :1]).item())
    assert np.isnan(average_precision(p, np.zeros((3, 2)), average="macro").item())


def test_real_chexpert_labels(shared_data: Path) -> None:
    """On the CheXpert test labels with random scores, weighted AUROC equals scikit-learn's."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_groundtruth.csv")
    y = frame.drop(columns=["Study"]).to_numpy().astype(int)
    p = np.random.default_rng(0).random(y.shape)
    keep = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    want = roc_auc_score(y[:, keep], p[:, keep], average="weighted")
    assert auroc(torch.from_numpy(p), torch.from_numpy(y)).item() == pytest.approx(want, abs=1e-6)


def test_errors() -> None:
    """Unknown averages and shape mismatches are reported."""
    with pytest.raises(ValueError, match="average must be 'weighted', 'macro' or None, got 'micro'"):
        auroc(np.zeros((2, 2)), np.zeros((2, 2)), average="micro")
    with pytest.raises(ValueError, match="average must be 'micro', 'macro' or None, got 'weighted'"):
        average_precision(np.zeros((2, 2)), np.zeros((2, 2)), average="weighted")
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(2, 2\) like `preds`, got \(2, 3\)"):
        auroc(np.zeros((2, 2)), np.zeros((2, 3)))
