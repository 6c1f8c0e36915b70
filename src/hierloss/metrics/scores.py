"""AUROC and average precision, per label and averaged, computed in torch (equal to scikit-learn's)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hierloss.metrics._inputs import scores_for, targets_like

__all__ = ["auroc", "average_precision"]


def _tie_groups(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Positives and negatives per group of equal scores, groups in decreasing score order."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].double()
    last = torch.ones_like(s, dtype=torch.bool)
    if s.numel() > 1:
        last[:-1] = s[1:] != s[:-1]
    tp_cum = torch.cumsum(y, 0)[last]
    fp_cum = torch.cumsum(1 - y, 0)[last]
    tp = torch.diff(tp_cum, prepend=tp_cum.new_zeros(1))
    fp = torch.diff(fp_cum, prepend=fp_cum.new_zeros(1))
    return tp, fp


def _binary_auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve of one label; NaN when only one class is present."""
    tp, fp = _tie_groups(scores, labels)
    n_pos, n_neg = tp.sum(), fp.sum()
    if n_pos == 0 or n_neg == 0:
        return scores.new_tensor(float("nan"), dtype=torch.float64)
    tp_before = torch.cumsum(tp, 0) - tp
    return (fp * (tp_before + 0.5 * tp)).sum() / (n_pos * n_neg)


def _binary_ap(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision ``Σ (R_k − R_{k−1}) · P_k`` over distinct thresholds; NaN without positives."""
    tp, fp = _tie_groups(scores, labels)
    n_pos = tp.sum()
    if n_pos == 0:
        return scores.new_tensor(float("nan"), dtype=torch.float64)
    tp_cum, fp_cum = torch.cumsum(tp, 0), torch.cumsum(fp, 0)
    precision = tp_cum / (tp_cum + fp_cum)
    return (tp / n_pos * precision).sum()


def _per_label(fn: Any, scores: Tensor, truth: Tensor) -> Tensor:
    return torch.stack([fn(scores[:, c], truth[:, c]) for c in range(scores.shape[1])]) if scores.shape[1] else \
        scores.new_zeros(0, dtype=torch.float64)


def _nan_average(values: Tensor, weights: Tensor | None = None) -> Tensor:
    keep = ~torch.isnan(values)
    if not bool(keep.any()):
        return values.new_tensor(float("nan"))
    if weights is None:
        return values[keep].mean()
    w = weights[keep].double()
    return (values[keep] * w).sum() / w.sum()


def auroc(preds: Any, target: Any, average: str | None = "weighted") -> Tensor:
    """Area under the ROC curve per label, or averaged over labels (the paper reports ``'weighted'``).

    **Single-class rule**: a label whose target holds only positives or only negatives has no ROC curve; its
    per-label value is NaN and it is left out of every average (never a crash). ``'weighted'`` weights the
    remaining labels by their number of positives (scikit-learn's support weighting), ``'macro'`` equally.
    Ties are handled as scikit-learn does (a tied positive/negative pair counts one half).

    Args:
        preds: ``(N, C)`` scores; NumPy accepted.
        target: ``(N, C)`` 0/1 targets.
        average: ``'weighted'``, ``'macro'``, or ``None`` for the ``(C,)`` per-label values.

    Returns:
        A float64 tensor: 0-d, or ``(C,)`` with ``average=None``; NaN if no label has both classes.
    """
    if average not in ("weighted", "macro", None):
        raise ValueError(f"average must be 'weighted', 'macro' or None, got {average!r}")
    scores = scores_for(preds, None)
    truth = targets_like(target, scores)
    per_label = _per_label(_binary_auroc, scores, truth)
    if average is None:
        return per_label
    return _nan_average(per_label, truth.sum(0) if average == "weighted" else None)


def average_precision(preds: Any, target: Any, average: str | None = "micro") -> Tensor:
    """Average precision (area under the precision-recall curve, scikit-learn's step-wise definition).

    ``'micro'`` pools every (sample, label) pair into one ranking: C-HMCNN's AU(PRC). ``'macro'`` averages the
    per-label values. **Single-class rule**: a label without positives has no precision-recall curve; its
    per-label value is NaN and it is left out of the macro average (micro uses every entry).

    Args:
        preds: ``(N, C)`` scores; NumPy accepted.
        target: ``(N, C)`` 0/1 targets.
        average: ``'micro'``, ``'macro'``, or ``None`` for the ``(C,)`` per-label values.
    """
    if average not in ("micro", "macro", None):
        raise ValueError(f"average must be 'micro', 'macro' or None, got {average!r}")
    scores = scores_for(preds, None)
    truth = targets_like(target, scores)
    if average == "micro":
        return _binary_ap(scores.reshape(-1), truth.reshape(-1))
    per_label = _per_label(_binary_ap, scores, truth)
    return per_label if average is None else _nan_average(per_label)
