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


def _two_class(y: np.ndarray) -> list[int]:
    return [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 60), st.integers(1, 6), st.sampled_from([1, 2, None]),
       st.sampled_from([0.05, 0.4, 0.95]))
def test_equal_to_sklearn(seed: int, n: int, c: int, decimals: int | None, rate: float) -> None:
    """Per-label, weighted, macro and micro values equal scikit-learn's (heavy ties included); others are NaN."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, c))
    p = np.round(p, decimals) if decimals is not None else p
    y = (rng.random((n, c)) < rate).astype(int)
    per_auc = auroc(p, y, average=None).numpy()
    per_ap = average_precision(p, y, average=None).numpy()
    ok = _two_class(y)
    for j in range(c):
        if j in ok:
            assert per_auc[j] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-6)
            assert per_ap[j] == pytest.approx(average_precision_score(y[:, j], p[:, j]), abs=1e-6)
        else:
            assert np.isnan(per_auc[j]) and np.isnan(per_ap[j])
    if ok:
        sub_p, sub_y = p[:, ok], y[:, ok]
        for avg in ("weighted", "macro"):
            want = roc_auc_score(sub_y, sub_p, average=avg) if len(ok) > 1 else roc_auc_score(sub_y[:, 0], sub_p[:, 0])
            assert auroc(p, y, average=avg).item() == pytest.approx(want, abs=1e-6)
        want = average_precision_score(sub_y, sub_p, average="macro") if len(ok) > 1 else \
            average_precision_score(sub_y[:, 0], sub_p[:, 0])
        assert average_precision(p, y, average="macro").item() == pytest.approx(want, abs=1e-6)
    else:
        assert np.isnan(auroc(p, y).item()) and np.isnan(average_precision(p, y, average="macro").item())
    if 0 < y.sum() < y.size:
        want = average_precision_score(y.ravel(), p.ravel())
        assert average_precision(p, y).item() == pytest.approx(want, abs=1e-6)
    else:
        assert np.isnan(average_precision(p, y).item())


def test_large_and_float32_equal_sklearn() -> None:
    """A 500 × 300 float32 problem (many labels at once) still equals scikit-learn label by label and averaged."""
    rng = np.random.default_rng(1)
    y = (rng.random((500, 300)) < 0.03).astype(np.uint8)
    p = (rng.random((500, 300)) + 0.3 * y).astype(np.float32)
    ok = _two_class(y)
    assert len(ok) > 250
    assert auroc(torch.from_numpy(p), torch.from_numpy(y)).item() == pytest.approx(
        roc_auc_score(y[:, ok], p[:, ok], average="weighted"), abs=1e-6)
    assert average_precision(p, y).item() == pytest.approx(average_precision_score(y.ravel(), p.ravel()), abs=1e-6)
    assert average_precision(p, y, "macro").item() == pytest.approx(
        average_precision_score(y[:, ok], p[:, ok], average="macro"), abs=1e-6)


def test_single_class_rule_by_hand() -> None:
    """All-positive and all-negative labels are NaN per label and skipped; all single-class gives NaN, no crash."""
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0]])
    p = np.array([[0.1, 0.2, 0.5], [0.4, 0.9, 0.5], [0.3, 0.1, 0.5]])
    per = auroc(p, y, average=None)
    assert np.isnan(per[0].item()) and per[1].item() == 1.0 and np.isnan(per[2].item())
    assert auroc(p, y).item() == 1.0 and auroc(p, y, "macro").item() == 1.0
    assert average_precision(p, y, "macro").item() == 1.0
    assert np.isnan(auroc(p[:, [0, 2]], y[:, [0, 2]]).item())
    assert np.isnan(average_precision(p, np.zeros((3, 3)), average="macro").item())
    assert np.isnan(average_precision(p, np.zeros((3, 3))).item())  # micro: the pooled target has no positive
    assert np.isnan(average_precision(p, np.ones((3, 3))).item())  # nor a negative
    assert np.isnan(auroc(np.zeros((0, 2)), np.zeros((0, 2))).item())


def test_ranking_only() -> None:
    """Both scores depend only on the ranking: logits and their sigmoid give the same values."""
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(40, 4)))
    y = torch.from_numpy((rng.random((40, 4)) < 0.5).astype(np.int64))
    torch.testing.assert_close(auroc(logits, y, None), auroc(torch.sigmoid(logits), y, None))
    torch.testing.assert_close(average_precision(logits, y), average_precision(torch.sigmoid(logits), y))


def test_real_chexpert_labels(shared_data: Path) -> None:
    """On the CheXpert test labels with random scores, weighted AUROC and micro AP equal scikit-learn's."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_groundtruth.csv")
    y = frame.drop(columns=["Study"]).to_numpy().astype(int)
    p = np.random.default_rng(0).random(y.shape)
    keep = _two_class(y)
    want = roc_auc_score(y[:, keep], p[:, keep], average="weighted")
    assert auroc(torch.from_numpy(p), torch.from_numpy(y)).item() == pytest.approx(want, abs=1e-6)
    assert average_precision(p, y).item() == pytest.approx(average_precision_score(y.ravel(), p.ravel()), abs=1e-6)


def test_errors() -> None:
    """Unknown averages, shape mismatches and non-0/1 targets are reported."""
    with pytest.raises(ValueError, match="average must be 'weighted', 'macro' or None, got 'micro'"):
        auroc(np.zeros((2, 2)), np.zeros((2, 2)), average="micro")
    with pytest.raises(ValueError, match="average must be 'micro', 'macro' or None, got 'weighted'"):
        average_precision(np.zeros((2, 2)), np.zeros((2, 2)), average="weighted")
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(2, 2\) like `preds`, got \(2, 3\)"):
        auroc(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Expected `preds` of shape \(N, C\), got \(4,\)"):
        average_precision(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="`target` column 0 holds -1; metrics expect 0/1 targets"):
        auroc(np.zeros((2, 2)), np.array([[-1, 0], [1, 0]]))


NAN = float("nan")


def test_nan_scores_are_refused_like_sklearn() -> None:
    """NaN scores raise a ValueError naming the column and the NaN count, as scikit-learn refuses them too."""
    p = np.array([[0.1], [NAN], [0.9], [0.4]])
    y = np.array([[0], [1], [1], [0]])
    with pytest.raises(ValueError, match="Input contains NaN"):
        roc_auc_score(y[:, 0], p[:, 0])
    with pytest.raises(ValueError, match=r"`preds` column 0 holds 1 NaN value\(s\)"):
        auroc(torch.from_numpy(p), torch.from_numpy(y))
    with pytest.raises(ValueError, match=r"`preds` column 0 holds 1 NaN value\(s\)"):
        average_precision(p, y)
    wide = np.zeros((5, 3))
    wide[[0, 2], 2] = NAN
    with pytest.raises(ValueError, match=r"`preds` column 2 holds 2 NaN value\(s\)"):
        average_precision(wide, np.zeros((5, 3)), average="macro")


def test_unvalidated_nan_scores_give_nan() -> None:
    """With validate_args=False a NaN score makes its label's value and every average NaN instead of raising."""
    p = torch.tensor([[0.1, 0.3], [NAN, 0.6], [0.9, 0.2], [0.4, 0.8]])
    y = torch.tensor([[0, 0], [1, 1], [1, 0], [0, 1]])
    per = auroc(p, y, average=None, validate_args=False)
    assert np.isnan(per[0].item()) and per[1].item() == pytest.approx(roc_auc_score(y[:, 1], p[:, 1]))
    per_ap = average_precision(p, y, average=None, validate_args=False)
    assert np.isnan(per_ap[0].item()) and per_ap[1].item() == pytest.approx(average_precision_score(y[:, 1], p[:, 1]))
    for value in (auroc(p, y, validate_args=False), auroc(p, y, "macro", validate_args=False),
                  average_precision(p, y, validate_args=False), average_precision(p, y, "macro", validate_args=False)):
        assert np.isnan(value.item())


def test_unvalidated_metrics_do_not_synchronise() -> None:
    """With validate_args=False no value is read back: the metrics run on 'meta' tensors, which hold no data (as a
    GPU stand-in: reading one fails like a synchronisation would)."""
    p = torch.rand(30, 4, dtype=torch.float64, device="meta")
    y = torch.zeros(30, 4, dtype=torch.long, device="meta")
    with pytest.raises(RuntimeError, match="meta tensors"):  # the checks do read
        auroc(p, y)
    for average in ("weighted", "macro", None):
        assert auroc(p, y, average, validate_args=False).device.type == "meta"
    for average in ("micro", "macro", None):
        assert average_precision(p, y, average, validate_args=False).device.type == "meta"
