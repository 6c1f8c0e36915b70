"""Calibration per label: reliability bins and the expected calibration error (ECE). Needs NumPy only.

For one label, the predicted probabilities are put in ``bins`` equal-width bins of ``[0, 1]`` (a probability
``p`` in bin ``min(⌊p · bins⌋, bins − 1)``); in each bin the mean probability is compared with the observed
frequency of positives. ``ECE = Σ_b (n_b / N) · |positive_rate_b − mean_probability_b|``. A reliability diagram
plots the two against each other (:func:`chexpert_example.plots.plot_reliability`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["calibration_report", "expected_calibration_error", "reliability_bins"]


def _check(probs: np.ndarray, target: np.ndarray, bins: int) -> None:
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if probs.shape != target.shape:
        raise ValueError(f"Expected probabilities and targets of the same shape, got {probs.shape} and {target.shape}")
    if probs.size and (np.nanmin(probs) < 0 or np.nanmax(probs) > 1):
        raise ValueError("probabilities must lie in [0, 1]")


def reliability_bins(probs: Any, target: Any, bins: int = 10) -> dict[str, np.ndarray]:
    """The reliability bins of one label.

    Args:
        probs: ``(N,)`` predicted probabilities.
        target: ``(N,)`` 0/1 targets; NaN entries are left out.
        bins: the number of equal-width bins.

    Returns:
        ``{'low', 'high', 'count', 'mean_probability', 'positive_rate'}``, each ``(bins,)``; the two means are NaN
        in an empty bin.

    Raises:
        ValueError: on shapes that differ, probabilities outside ``[0, 1]``, or ``bins < 1``.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    _check(p, y, bins)
    known = ~np.isnan(y)
    p, y = p[known], y[known]
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_probability = np.bincount(which, weights=p, minlength=bins) / count
        positive_rate = np.bincount(which, weights=y, minlength=bins) / count
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {"low": edges[:-1], "high": edges[1:], "count": count, "mean_probability": mean_probability,
            "positive_rate": positive_rate}


def expected_calibration_error(probs: Any, target: Any, bins: int = 10) -> np.ndarray:
    """``(C,)`` ECE of each label of ``(N, C)`` probabilities and 0/1 targets (NaN targets left out; NaN for a
    label without any known target)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    _check(p, y, bins)
    if p.ndim != 2:
        raise ValueError(f"Expected (N, C) probabilities, got shape {p.shape}")
    out = np.full(p.shape[1], np.nan)
    for column in range(p.shape[1]):
        table = reliability_bins(p[:, column], y[:, column], bins)
        total = table["count"].sum()
        if total:
            used = table["count"] > 0
            gap = np.abs(table["positive_rate"][used] - table["mean_probability"][used])
            out[column] = float((table["count"][used] / total * gap).sum())
    return out


def calibration_report(probs: Any, target: Any, labels: Sequence[str], bins: int = 10) -> dict[str, Any]:
    """JSON-ready calibration of every label: ``{'bins': bins, 'mean_ece': ..., 'labels': {label: {'ece': ...,
    'bins': [{'low', 'high', 'count', 'mean_probability', 'positive_rate'}, ...]}}}`` (empty bins' means are
    ``None``; ``mean_ece`` is the unweighted mean over labels)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(labels):
        raise ValueError(f"Expected (N, {len(labels)}) probabilities, got shape {p.shape}")
    ece = expected_calibration_error(p, y, bins)
    per_label: dict[str, Any] = {}
    for column, label in enumerate(labels):
        table = reliability_bins(p[:, column], y[:, column], bins)
        per_label[label] = {
            "ece": None if np.isnan(ece[column]) else float(ece[column]),
            "bins": [{"low": float(table["low"][b]), "high": float(table["high"][b]),
                      "count": int(table["count"][b]),
                      "mean_probability": None if table["count"][b] == 0 else float(table["mean_probability"][b]),
                      "positive_rate": None if table["count"][b] == 0 else float(table["positive_rate"][b])}
                     for b in range(bins)],
        }
    finite = ece[~np.isnan(ece)]
    return {"bins": bins, "mean_ece": float(finite.mean()) if finite.size else None, "labels": per_label}
