"""AUROC and average precision, per label and averaged, computed in torch (equal to scikit-learn's).

**Single-class rule.** A ranking problem (one label's column, or the pooled problem of ``'micro'`` average
precision) whose target holds a single class, only negatives or only positives, has no defined score: its value
is NaN, and the averages over labels leave it out. If nothing is left, the average is NaN. Nothing raises.

**NaN scores** are a ``ValueError`` naming the column and the count (scikit-learn refuses them too). With
``validate_args=False`` nothing is checked (no GPU synchronisation); a label with a NaN score is then NaN, and so is
every average that includes it: a NaN is never skipped as if the label were single-class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hierloss.metrics._inputs import scores_for, targets_like

__all__ = ["auroc", "average_precision"]


def _ranked(scores: Tensor, truth: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows of ``(B, M)`` problems sorted ascending: 0/1 targets, and each entry's tie group ``[low, high)``."""
    s, order = torch.sort(scores.contiguous(), dim=1, stable=True)
    y = truth.double().gather(1, order)
    low = torch.searchsorted(s, s, side="left")
    high = torch.searchsorted(s, s, side="right")
    if s.shape[1] > 0:  # NaN (sorted last) is found past the end: keep the gather in bounds, the row becomes NaN
        low = low.clamp_max(s.shape[1] - 1)
    return s, y, low, high


def _nan_where_invalid(values: Tensor, scores: Tensor) -> Tensor:
    """``values`` (one per row of ``(B, M)`` scores) set to NaN where the row holds a NaN score."""
    return torch.where(torch.isnan(scores).any(1), torch.full_like(values, float("nan")), values)


def binary_auroc(scores: Tensor, truth: Tensor) -> Tensor:
    """AUROC of each row of ``(B, M)`` scores/targets, as float64 ``(B,)``; NaN for a single-class row or a row
    holding a NaN score.

    The Mann–Whitney statistic with mid-ranks for ties: ``(Σ_pos rank − P(P+1)/2) / (P·Q)`` for ``P`` positives
    and ``Q`` negatives, which counts a tied positive/negative pair one half, as scikit-learn's trapezoids do.
    """
    _, y, low, high = _ranked(scores, truth)
    mid_rank = (low + high + 1).double() / 2
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    u = (y * mid_rank).sum(1) - n_pos * (n_pos + 1) / 2
    defined = (n_pos > 0) & (n_neg > 0)
    auc = torch.where(defined, u / torch.where(defined, n_pos * n_neg, torch.ones_like(u)),
                      torch.full_like(u, float("nan")))
    return _nan_where_invalid(auc, scores)


def binary_average_precision(scores: Tensor, truth: Tensor) -> Tensor:
    """Average precision of each row of ``(B, M)`` scores/targets, float64 ``(B,)``; NaN for a single-class row or
    a row holding a NaN score.

    scikit-learn's step-wise ``Σ_k (R_k − R_{k−1})·P_k`` over distinct thresholds, written per positive: each
    positive adds ``1/P`` times the precision at its own score's threshold, ``#pos(≥ s) / #all(≥ s)``.
    """
    _, y, low, _ = _ranked(scores, truth)
    m = y.shape[1]
    n_pos = y.sum(1)
    pos_before = torch.cumsum(y, 1) - y  # positives strictly before each sorted position
    pos_at_or_above = n_pos.unsqueeze(1) - pos_before.gather(1, low)
    all_at_or_above = (m - low).double()
    precision = pos_at_or_above / all_at_or_above
    defined = (n_pos > 0) & (n_pos < m)
    ap = (y * precision).sum(1) / torch.where(defined, n_pos, torch.ones_like(n_pos))
    return _nan_where_invalid(torch.where(defined, ap, torch.full_like(ap, float("nan"))), scores)


def _nan_average(values: Tensor, scores: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted mean of the per-label ``values`` over the labels that have one (single-class labels left out);
    NaN if none has, or if a label's ``(N, C)`` ``scores`` hold a NaN."""
    keep = ~torch.isnan(values)
    w = keep.double() if weights is None else weights.double() * keep
    total = w.sum()
    mean = torch.where(keep, values, torch.zeros_like(values)).mul(w).sum() / torch.where(total > 0, total, 1.0)
    nan = torch.full_like(mean, float("nan"))
    return torch.where((total > 0) & ~torch.isnan(scores).any(), mean, nan)


def auroc(preds: Any, target: Any, average: str | None = "weighted", validate_args: bool = True) -> Tensor:
    """Area under the ROC curve per label, or averaged over labels (the paper reports ``'weighted'``).

    Equal to ``sklearn.metrics.roc_auc_score`` on every label with both classes (ties count one half).
    ``'weighted'`` weights each label by its number of positives (scikit-learn's support weighting),
    ``'macro'`` weights labels equally. Single-class labels are NaN per label and left out of both averages
    (scikit-learn raises instead); see the module's single-class rule.

    Args:
        preds: ``(N, C)`` scores (probabilities or logits: AUROC only sees the ranking); NumPy accepted.
        target: ``(N, C)`` 0/1 targets.
        average: ``'weighted'``, ``'macro'``, or ``None`` for the ``(C,)`` per-label values.
        validate_args: refuse NaN scores (naming the column and the count) and targets other than 0/1. The checks
            read the inputs back to the host, a GPU synchronisation; with ``False`` nothing is read back, a label
            with a NaN score is NaN and so is the average, and any non-zero target counts as 1.

    Returns:
        A float64 tensor: 0-d, or ``(C,)`` with ``average=None``; NaN if no label has both classes.

    Raises:
        ValueError: for an unknown ``average``, mismatched shapes, or (with ``validate_args``) NaN scores or
            non-0/1 targets.

    Example:
        >>> import torch
        >>> preds = torch.tensor([[0.9, 0.2], [0.4, 0.8], [0.3, 0.1]])
        >>> target = torch.tensor([[1, 0], [0, 1], [1, 1]])
        >>> auroc(preds, target, average=None)
        tensor([0.5000, 0.5000], dtype=torch.float64)
        >>> auroc(preds, torch.tensor([[1, 0], [0, 1], [1, 0]]))  # (2 · 0.5 + 1 · 1.0) / 3 positives
        tensor(0.6667, dtype=torch.float64)
    """
    if average not in ("weighted", "macro", None):
        raise ValueError(f"average must be 'weighted', 'macro' or None, got {average!r}")
    scores = scores_for(preds, None, validate_args=validate_args)
    truth = targets_like(target, scores, validate_args=validate_args)
    per_label = binary_auroc(scores.T, truth.T)
    if average is None:
        return per_label
    return _nan_average(per_label, scores, truth.sum(0) if average == "weighted" else None)


def average_precision(preds: Any, target: Any, average: str | None = "micro", validate_args: bool = True) -> Tensor:
    """Average precision (area under the precision-recall curve, scikit-learn's step-wise definition).

    ``'micro'`` pools every (sample, label) pair into one ranking: C-HMCNN's AU(PRC). ``'macro'`` is the
    unweighted mean of the per-label values. Equal to ``sklearn.metrics.average_precision_score`` wherever the
    target holds both classes. Single-class labels are NaN per label and left out of ``'macro'`` (scikit-learn
    scores a label without positives 0 with a warning, and one without negatives 1); the pooled ``'micro'``
    problem is NaN only if the whole target is single-class.

    Args:
        preds: ``(N, C)`` scores; NumPy accepted.
        target: ``(N, C)`` 0/1 targets.
        average: ``'micro'``, ``'macro'``, or ``None`` for the ``(C,)`` per-label values.
        validate_args: refuse NaN scores and non-0/1 targets (see :func:`auroc`; ``False`` reads nothing back).

    Returns:
        A float64 tensor: 0-d, or ``(C,)`` with ``average=None``.

    Raises:
        ValueError: for an unknown ``average``, mismatched shapes, or (with ``validate_args``) NaN scores or
            non-0/1 targets.

    Example:
        >>> import torch
        >>> preds = torch.tensor([[0.9, 0.2], [0.4, 0.8], [0.3, 0.1]])
        >>> target = torch.tensor([[1, 0], [0, 1], [1, 1]])
        >>> average_precision(preds, target, average=None)
        tensor([0.8333, 0.8333], dtype=torch.float64)
        >>> average_precision(preds, target)
        tensor(0.8542, dtype=torch.float64)
    """
    if average not in ("micro", "macro", None):
        raise ValueError(f"average must be 'micro', 'macro' or None, got {average!r}")
    scores = scores_for(preds, None, validate_args=validate_args)
    truth = targets_like(target, scores, validate_args=validate_args)
    if average == "micro":
        return binary_average_precision(scores.reshape(1, -1), truth.reshape(1, -1))[0]
    per_label = binary_average_precision(scores.T, truth.T)
    return per_label if average is None else _nan_average(per_label, scores)
