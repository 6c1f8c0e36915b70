"""Hierarchical precision, recall and F1 (Kiritchenko et al., 2005) on ancestor-augmented label sets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hierloss.hierarchy import Hierarchy
from hierloss.metrics._inputs import scores_for, targets_like

__all__ = ["hierarchical_prf", "hierarchical_prf_counts"]


def hierarchical_prf_counts(preds: Any, target: Any, hierarchy: Hierarchy,
                            threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample ``(|P̂ ∩ T̂|, |P̂|, |T̂|)`` as float ``(N,)`` tensors, where ``P̂``/``T̂`` are the predicted / true
    label sets augmented with all their ancestors. Nodes are identified by column, so two labels with the same
    short name under different parents stay different."""
    scores = scores_for(preds, hierarchy)
    truth = targets_like(target, scores)
    predicted = hierarchy.propagate(scores > threshold)
    actual = hierarchy.propagate(truth)
    inter = (predicted & actual).sum(1).double()
    return inter, predicted.sum(1).double(), actual.sum(1).double()


def _ratio(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(num, zero_division))


def hierarchical_prf(preds: Any, target: Any, hierarchy: Hierarchy, average: str = "micro", threshold: float = 0.5,
                     zero_division: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Hierarchical precision, recall and F1: ``(hP, hR, hF)``.

    ``hP = Σ|P̂ ∩ T̂| / Σ|P̂|``, ``hR = Σ|P̂ ∩ T̂| / Σ|T̂|``, ``hF = 2·hP·hR / (hP + hR)``, where ``P̂`` and
    ``T̂`` are the predicted (score > ``threshold``) and true label sets of a sample, each augmented with all
    ancestors. ``average='micro'`` sums the counts over samples first; ``'macro'`` computes ``hP``, ``hR``,
    ``hF`` per sample and averages them over samples.

    Args:
        preds: ``(N, C)`` scores or 0/1 predictions.
        target: ``(N, C)`` 0/1 targets.
        hierarchy: the label hierarchy.
        average: ``'micro'`` or ``'macro'`` (over samples).
        threshold: a label is predicted when its score is above it.
        zero_division: the value of a ratio whose denominator is 0 (an empty predicted or true set).

    Returns:
        Three 0-d float64 tensors.
    """
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    inter, n_pred, n_true = hierarchical_prf_counts(preds, target, hierarchy, threshold)
    if average == "micro":
        inter, n_pred, n_true = inter.sum(), n_pred.sum(), n_true.sum()
    precision = _ratio(inter, n_pred, zero_division)
    recall = _ratio(inter, n_true, zero_division)
    f1 = _ratio(2 * precision * recall, precision + recall, zero_division)
    if average == "macro":
        return precision.mean(), recall.mean(), f1.mean()
    return precision, recall, f1
