"""Hierarchical precision, recall and F1 (Kiritchenko et al., 2005) on ancestor-augmented label sets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hierloss.hierarchy import Hierarchy
from hierloss.metrics._inputs import check_threshold, check_zero_division, scores_for, targets_like
from hierloss.metrics.consistency import _logit_cut

__all__ = ["hierarchical_prf"]

AVERAGES = ("micro", "macro", "samples")


def _check_average(average: object) -> None:
    """Raise ``ValueError`` unless ``average`` is ``'micro'``, ``'macro'`` or ``'samples'``."""
    if average not in AVERAGES:
        raise ValueError(f"average must be 'micro', 'macro' or 'samples', got {average!r}")


def _check_arguments(average: object, threshold: object, zero_division: object) -> None:
    """The argument rules of :func:`hierarchical_prf` and ``HierarchicalF1`` (Python values only, no tensor read)."""
    _check_average(average)
    check_threshold(threshold, allow_none=False)
    check_zero_division(zero_division)


def _augmented_sets(preds: Any, target: Any, hierarchy: Hierarchy, threshold: float, from_logits: bool = False,
                   validate_args: bool = True) -> tuple[Tensor, Tensor]:
    """Bool ``(N, C)`` predicted (score > ``threshold``) and true label sets, each closed under ancestors.

    Logits are never passed through a sigmoid, whose float32 rounding misjudges logits just above
    ``logit(threshold)`` and (above about 17) makes every large logit 1: they are compared in float64 (which holds
    every float32 exactly) with ``consistency._logit_cut``, the violation metrics' rule, so a logit is predicted
    exactly when its exact sigmoid is above the threshold (float32 and narrower logits; float64 ones up to the
    rounding of ``logit(threshold)``). The cut is a cached Python float: nothing is read back.
    """
    scores = scores_for(preds, hierarchy, from_logits=False, validate_args=validate_args)  # logits stay logits
    truth = targets_like(target, scores, validate_args=validate_args)
    predicted = scores.double() > _logit_cut(threshold, scores.dtype) if from_logits else scores > threshold
    return hierarchy.propagate(predicted), hierarchy.propagate(truth)


def _prf_counts(predicted: Tensor, actual: Tensor, average: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(|P̂ ∩ T̂|, |P̂|, |T̂|)`` as float64: totals (``'micro'``), per label ``(C,)`` or per sample ``(N,)``."""
    inter, predicted, actual = (predicted & actual).double(), predicted.double(), actual.double()
    if average == "micro":
        return inter.sum(), predicted.sum(), actual.sum()
    dim = 0 if average == "macro" else 1
    return inter.sum(dim), predicted.sum(dim), actual.sum(dim)


def _ratio(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(num, zero_division))


def _prf_from_counts(inter: Tensor, n_pred: Tensor, n_true: Tensor,
                    zero_division: float) -> tuple[Tensor, Tensor, Tensor]:
    """Elementwise precision, recall and F1 from counts, with scikit-learn's zero-division rule.

    ``P = inter / n_pred``, ``R = inter / n_true``, ``F = 2·inter / (n_pred + n_true)`` (the harmonic mean of
    ``P`` and ``R`` whenever both are defined). A ratio whose denominator is 0 takes ``zero_division``; so ``F``
    does only when both sets are empty, and ``F = 0`` when exactly one is.
    """
    return (_ratio(inter, n_pred, zero_division), _ratio(inter, n_true, zero_division),
            _ratio(2 * inter, n_pred + n_true, zero_division))


def hierarchical_prf(preds: Any, target: Any, hierarchy: Hierarchy, average: str = "micro", threshold: float = 0.5,
                     zero_division: float = 0.0, from_logits: bool = False,
                     validate_args: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Hierarchical precision, recall and F1: ``(hP, hR, hF)``.

    For a sample, ``P̂`` is the set of predicted labels (score > ``threshold``) and ``T̂`` the set of true
    labels, each augmented with all their ancestors. Nodes are identified by their column (their full label),
    so two labels with the same short name under different parents stay different. Then
    ``hP = |P̂ ∩ T̂| / |P̂|``, ``hR = |P̂ ∩ T̂| / |T̂|`` and ``hF = 2·|P̂ ∩ T̂| / (|P̂| + |T̂|)``
    (the harmonic mean of ``hP`` and ``hR``), with the sums and means taken as ``average`` says:

    * ``'micro'`` (Kiritchenko's definition): sum ``|P̂ ∩ T̂|``, ``|P̂|``, ``|T̂|`` over all samples, then
      divide;
    * ``'macro'``: per label over samples, then the unweighted mean over labels;
    * ``'samples'``: per sample, then the mean over samples.

    These equal scikit-learn's ``precision_recall_fscore_support(T̂, P̂, average=...)`` on the augmented 0/1
    matrices, including its zero-division rule: a ratio whose denominator is 0 (an empty predicted or true set)
    is ``zero_division``; ``hF`` is ``zero_division`` only when both sets are empty.

    Args:
        preds: ``(N, C)`` scores (probabilities, or logits with ``from_logits=True``) or 0/1 predictions; NumPy
            accepted.
        target: ``(N, C)`` 0/1 targets (need not be ancestor-closed).
        hierarchy: the label hierarchy, ``C = hierarchy.num_labels``.
        average: ``'micro'``, ``'macro'`` or ``'samples'``.
        threshold: a label is predicted when its score is above it; in ``(0, 1)``, the rule of every metric.
        zero_division: the value of a ratio whose denominator is 0: a number (``0.0``, ``1.0``, ``float('nan')``,
            as scikit-learn accepts; its ``'warn'`` is ``0.0``).
        from_logits: ``preds`` are logits, each predicted exactly when its sigmoid (in exact arithmetic) is above
            ``threshold``: compared with ``logit(threshold)``, never through a rounded sigmoid (in float32 every
            logit above about 17 has the sigmoid 1), as :func:`hierloss.metrics.edge_violations` compares them.
        validate_args: refuse NaN scores (naming the label and the count) and targets other than 0/1. The checks
            read the inputs back to the host, a GPU synchronisation; with ``False`` nothing is read back, a NaN
            score counts as not predicted and any non-zero target as 1.

    Returns:
        Three 0-d float64 tensors.

    Raises:
        ValueError: for an unknown ``average``, a threshold outside ``(0, 1)``, mismatched shapes, or (with
            ``validate_args``) NaN scores or non-0/1 targets.
        TypeError: for a threshold or ``zero_division`` that is not a number.

    Example:
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b", "c"]})
        >>> preds = [[0.0, 0.9, 0.0]]  # predicts b, hence {a, b}
        >>> target = [[0, 0, 1]]       # truth c, hence {a, c}
        >>> print(*(round(float(v), 3) for v in hierarchical_prf(preds, target, h)))
        0.5 0.5 0.5
    """
    _check_arguments(average, threshold, zero_division)
    predicted, actual = _augmented_sets(preds, target, hierarchy, threshold, from_logits, validate_args)
    p, r, f = _prf_from_counts(*_prf_counts(predicted, actual, average), zero_division)
    if average == "micro":
        return p, r, f
    if p.numel() == 0:  # no samples (or no labels) to average over
        return p.new_tensor(zero_division), p.new_tensor(zero_division), p.new_tensor(zero_division)
    return p.mean(), r.mean(), f.mean()
