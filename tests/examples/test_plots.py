"""Tests for chexpert_example.plots: the ROC curve against scikit-learn, and the PNG files (core environment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chexpert_example.calibration import calibration_report
from chexpert_example.plots import plot_reliability, plot_roc_curves, roc_curve
from PIL import Image
from sklearn.metrics import roc_curve as sklearn_roc_curve


def test_roc_curve_equals_scikit_learn_with_ties() -> None:
    """Every distinct threshold's (FPR, TPR), ties included, equals scikit-learn's (no points dropped)."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 1)  # many ties
    truth = (rng.random(200) < 0.3).astype(float)
    fpr, tpr = roc_curve(scores, truth)
    expected_fpr, expected_tpr, _ = sklearn_roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    with pytest.raises(ValueError, match=r"a ROC curve needs both classes"):
        roc_curve([0.1, 0.2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"same length, got 2 and 3"):
        roc_curve([0.1, 0.2], [1.0, 0.0, 1.0])


def test_plots_write_png_files(tmp_path: Path) -> None:
    """The ROC figure and the reliability grid are written as PNG images."""
    rng = np.random.default_rng(1)
    probs, target = rng.random((60, 3)), (rng.random((60, 3)) < 0.4).astype(float)
    target[:, 2] = 0.0  # one class only: left out of the ROC figure
    plot_roc_curves(probs, target, ["a", "b", "c"], {"a": 0.5, "b": 0.6, "c": None}, tmp_path / "roc.png", "t")
    plot_reliability(calibration_report(probs, target, ["a", "b", "c"]), tmp_path / "rel.png", "t")
    for name in ("roc.png", "rel.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
