"""Evaluation: weighted AUROC per label and overall, and the violation rate, with :mod:`hierloss.metrics`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hierloss import Hierarchy
from hierloss.metrics import auroc, violation_rate

__all__ = ["Scores", "score"]


@dataclass(frozen=True)
class Scores:
    """What the example reports for one split.

    Attributes:
        weighted_auroc: AUROC averaged over labels weighted by their number of positives (the paper's metric);
            labels with one class only are left out. NaN when no label has both classes.
        per_label_auroc: ``{label: AUROC}``; ``None`` where a label has only one class.
        violation_rate: fraction of images with some edge ``p_parent < 0.5 < p_child``.
        violation_rate_any_threshold: fraction of images with some edge ``p_child > p_parent`` (the incoherence
            that ranking metrics see).
        loss: mean loss over the split, when computed.
    """

    weighted_auroc: float
    per_label_auroc: dict[str, float | None]
    violation_rate: float
    violation_rate_any_threshold: float
    loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes ``None``."""
        return {
            "weighted_auroc": _finite_or_none(self.weighted_auroc),
            "per_label_auroc": dict(self.per_label_auroc),
            "violation_rate": self.violation_rate,
            "violation_rate_any_threshold": self.violation_rate_any_threshold,
            "loss": self.loss,
            **self.extra,
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _per_label_auroc(probs: Tensor, target: Tensor) -> Tensor:
    """``(C,)`` AUROC, each label over its known (non-NaN) targets; NaN where one class only."""
    known = ~torch.isnan(target)
    if bool(known.all()):
        per_label: Tensor = auroc(probs, target, average=None)
        return per_label
    values = []
    for column in range(probs.shape[1]):
        rows = known[:, column]
        values.append(auroc(probs[rows, column:column + 1], target[rows, column:column + 1], average=None)[0])
    return torch.stack(values)


def score(probs: Tensor, target: Tensor, hierarchy: Hierarchy, loss: float | None = None) -> Scores:
    """Score predicted probabilities against targets.

    Args:
        probs: ``(N, C)`` probabilities (columns in ``hierarchy.labels`` order).
        target: ``(N, C)`` 0/1 targets; NaN entries (policy ``'ignore'``) are left out of their label's AUROC.
        hierarchy: the label hierarchy.
        loss: the mean loss, to carry along.
    """
    probs = probs.double().cpu()
    target = target.double().cpu()
    per_label = _per_label_auroc(probs, target)
    if not bool(torch.isnan(target).any()):
        weighted = float(auroc(probs, target, average="weighted"))
    else:  # the same support weighting, each label over its known rows
        positives = torch.nan_to_num(target, nan=0.0).sum(0)
        keep = ~torch.isnan(per_label)
        weighted = float((per_label[keep] * positives[keep]).sum() / positives[keep].sum()) if bool(keep.any()) \
            else math.nan
    return Scores(
        weighted_auroc=weighted,
        per_label_auroc={name: _finite_or_none(float(v)) for name, v in zip(hierarchy.labels, per_label)},
        violation_rate=float(violation_rate(probs, hierarchy, threshold=0.5)),
        violation_rate_any_threshold=float(violation_rate(probs, hierarchy, threshold=None)),
        loss=loss,
    )
