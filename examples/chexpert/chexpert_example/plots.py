"""ROC curves and reliability diagrams as PNG files (matplotlib, drawn off-screen)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_reliability", "plot_roc_curves", "roc_curve"]


def roc_curve(scores: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rates, true positive rates)`` at every distinct threshold, from ``(0, 0)`` to ``(1, 1)``.

    Raises:
        ValueError: when ``truth`` holds a single class (no curve), or the shapes differ.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(truth, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"Expected scores and targets of the same length, got {s.size} and {y.size}")
    positives, negatives = y.sum(), (1 - y).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC curve needs both classes")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last position of each distinct score
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_curves(probs: Any, target: Any, labels: Sequence[str], per_label_auroc: Mapping[str, float | None],
                    path: str | os.PathLike[str], title: str) -> None:
    """One figure with the ROC curve of every label that has both classes, its AUROC in the legend."""
    plt = _pyplot()
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(target, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    colours = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, max(len(labels), 1)))
    ax.set_prop_cycle(color=list(colours), linestyle=["-", "--", "-."] * (len(labels) // 3) + ["-"] * (len(labels) % 3))
    for column, label in enumerate(labels):
        value = per_label_auroc.get(label)
        if value is None:
            continue
        known = ~np.isnan(y[:, column])
        fpr, tpr = roc_curve(p[known, column], y[known, column])
        ax.plot(fpr, tpr, linewidth=1.0, label=f"{label} ({value:.3f})")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_reliability(report: Mapping[str, Any], path: str | os.PathLike[str], title: str) -> None:
    """A grid of reliability diagrams, one per label, from :func:`chexpert_example.calibration.
    calibration_report`: observed frequency against mean probability in each non-empty bin, and the diagonal."""
    plt = _pyplot()
    labels = list(report["labels"])
    columns = 5
    rows = math.ceil(len(labels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels):
        entry = report["labels"][label]
        filled = [b for b in entry["bins"] if b["count"] > 0]
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.plot([b["mean_probability"] for b in filled], [b["positive_rate"] for b in filled], "o-", markersize=3)
        ece = "n/a" if entry["ece"] is None else f"{entry['ece']:.3f}"
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{label}\nECE {ece}")
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.04, top=0.9, hspace=0.5, wspace=0.25)
    fig.savefig(path, dpi=72)
    plt.close(fig)
