"""Tests for chexpert_example.calibration: reliability bins and ECE against naive loops (core environment)."""

from __future__ import annotations

import numpy as np
import pytest
from chexpert_example.calibration import calibration_report, expected_calibration_error, reliability_bins


def naive_ece(probs: np.ndarray, target: np.ndarray, bins: int) -> float:
    """ECE of one label by a loop over samples and bins (p = 1 falls in the last bin)."""
    total, gap = 0, 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, p in enumerate(probs) if low <= p < high or (b == bins - 1 and p == 1.0)]
        if members:
            confidence = sum(probs[i] for i in members) / len(members)
            frequency = sum(target[i] for i in members) / len(members)
            gap += len(members) * abs(frequency - confidence)
            total += len(members)
    return gap / total


def test_ece_equals_a_naive_loop_per_label() -> None:
    """ECE per label equals the weighted mean |positive rate − mean probability| over bins, loop-computed."""
    rng = np.random.default_rng(0)
    probs = rng.random((300, 4))
    probs[:5, 0] = 1.0  # the upper edge belongs to the last bin
    probs[5:10, 1] = 0.0
    target = (rng.random((300, 4)) < probs ** 2).astype(np.float64)
    for bins in (1, 5, 10):
        ece = expected_calibration_error(probs, target, bins)
        expected = [naive_ece(probs[:, j], target[:, j], bins) for j in range(4)]
        np.testing.assert_allclose(ece, expected, rtol=1e-12, atol=1e-15)
    perfect = np.repeat([[0.05], [0.95]], 200, axis=0)
    labels = np.concatenate([np.zeros(190), np.ones(10), np.zeros(10), np.ones(190)])[:, None]
    assert expected_calibration_error(perfect, labels, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_reliability_bins_leave_nan_targets_out() -> None:
    """NaN targets are left out of a label's bins; an empty bin has NaN means and count 0."""
    probs = np.array([0.05, 0.15, 0.15, 0.95, 0.96])
    target = np.array([0.0, 1.0, np.nan, 1.0, 0.0])
    table = reliability_bins(probs, target, bins=10)
    assert table["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table["mean_probability"][9] == pytest.approx(0.955)
    assert table["positive_rate"][9] == pytest.approx(0.5) and np.isnan(table["positive_rate"][2])
    np.testing.assert_allclose(table["low"], np.arange(10) / 10)


def test_calibration_report_is_json_ready() -> None:
    """The report holds each label's ECE and bins (None for empty-bin means) and the mean ECE over labels."""
    rng = np.random.default_rng(1)
    probs, target = rng.random((50, 2)), (rng.random((50, 2)) < 0.5).astype(float)
    report = calibration_report(probs, target, ["a", "b"], bins=4)
    ece = expected_calibration_error(probs, target, 4)
    assert report["bins"] == 4 and report["mean_ece"] == pytest.approx(ece.mean())
    assert report["labels"]["b"]["ece"] == pytest.approx(ece[1])
    assert [b["count"] for b in report["labels"]["a"]["bins"]] == reliability_bins(probs[:, 0], target[:, 0],
                                                                                   4)["count"].tolist()
    empty = calibration_report(np.array([[0.1]]), np.array([[1.0]]), ["a"], bins=2)
    assert empty["labels"]["a"]["bins"][1] == {"low": 0.5, "high": 1.0, "count": 0, "mean_probability": None,
                                               "positive_rate": None}


def test_calibration_errors() -> None:
    """Bad bins, shapes and probabilities raise ValueError saying what was expected."""
    with pytest.raises(ValueError, match=r"bins must be >= 1, got 0"):
        reliability_bins([0.5], [1.0], bins=0)
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        reliability_bins([0.5, 0.2], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"probabilities must lie in \[0, 1\]"):
        expected_calibration_error(np.array([[1.5]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match=r"Expected \(N, 3\) probabilities, got shape \(4, 2\)"):
        calibration_report(np.zeros((4, 2)), np.zeros((4, 2)), ["a", "b", "c"])
