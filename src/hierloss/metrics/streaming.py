"""Streaming metrics with DDP synchronisation, as torchmetrics ``Metric`` classes (``pip install hierloss[metrics]``).

States are sums (``dist_reduce_fx="sum"``) or concatenations (``"cat"``), so ``compute()`` on any rank of a
``torch.distributed`` job returns the metric of the union of every rank's updates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat
except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError("hierloss.metrics.streaming needs torchmetrics: pip install 'hierloss[metrics]'") from err

from hierloss.hierarchy import Hierarchy
from hierloss.metrics.consistency import edge_violations
from hierloss.metrics.hierarchical_prf import _ratio, hierarchical_prf_counts
from hierloss.metrics.scores import auroc, average_precision

__all__ = ["AUROC", "AveragePrecision", "HierarchicalF1", "ViolationRate"]


class ViolationRate(Metric):
    """Fraction of samples with at least one violated edge, accumulated over batches.

    Args:
        hierarchy: the label hierarchy.
        threshold: decision threshold, or ``None`` for incoherence at any threshold (see
            :func:`hierloss.metrics.violation_rate`).
        from_logits: apply a sigmoid to the predictions first.
    """

    full_state_update = False
    higher_is_better = False
    violated: Tensor
    total: Tensor

    def __init__(self, hierarchy: Hierarchy, threshold: float | None = 0.5, from_logits: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hierarchy = hierarchy
        self.threshold = threshold
        self.from_logits = from_logits
        self.add_state("violated", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor) -> None:
        """Add a batch of ``(N, C)`` predictions."""
        flags = edge_violations(preds, self.hierarchy, self.threshold, self.from_logits).any(dim=1)
        self.violated += flags.sum()
        self.total += flags.numel()

    def compute(self) -> Tensor:
        """Violation rate over everything seen (0 if nothing was)."""
        return self.violated.float() / self.total.clamp_min(1).float()


class HierarchicalF1(Metric):
    """Hierarchical precision / recall / F1 accumulated over batches; ``compute()`` returns ``hF``.

    ``compute_all()`` returns ``(hP, hR, hF)``. ``average='micro'`` accumulates the three counts;
    ``'macro'`` accumulates per-sample ratios (see :func:`hierloss.metrics.hierarchical_prf`).
    """

    full_state_update = False
    higher_is_better = True
    inter: Tensor
    n_pred: Tensor
    n_true: Tensor
    samples: Tensor

    def __init__(self, hierarchy: Hierarchy, average: str = "micro", threshold: float = 0.5,
                 zero_division: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if average not in ("micro", "macro"):
            raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
        self.hierarchy, self.average, self.threshold, self.zero_division = hierarchy, average, threshold, zero_division
        for name in ("inter", "n_pred", "n_true"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` scores and 0/1 targets."""
        inter, n_pred, n_true = hierarchical_prf_counts(preds, target, self.hierarchy, self.threshold)
        if self.average == "macro":
            p = _ratio(inter, n_pred, self.zero_division)
            r = _ratio(inter, n_true, self.zero_division)
            inter, n_pred, n_true = p, r, _ratio(2 * p * r, p + r, self.zero_division)
        self.inter += inter.sum()
        self.n_pred += n_pred.sum()
        self.n_true += n_true.sum()
        self.samples += inter.numel()

    def compute_all(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(hP, hR, hF)`` over everything seen."""
        if self.average == "macro":
            n = self.samples.clamp_min(1).double()
            return self.inter / n, self.n_pred / n, self.n_true / n
        p = _ratio(self.inter, self.n_pred, self.zero_division)
        r = _ratio(self.inter, self.n_true, self.zero_division)
        return p, r, _ratio(2 * p * r, p + r, self.zero_division)

    def compute(self) -> Tensor:
        """Hierarchical F1 over everything seen."""
        return self.compute_all()[2]


class _ScoreMetric(Metric):
    full_state_update = False
    higher_is_better = True
    preds: list[Tensor]
    target: list[Tensor]

    def __init__(self, average: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.average = average
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` scores and 0/1 targets."""
        self.preds.append(preds.detach().double())
        self.target.append(target.detach().to(torch.uint8))


class AUROC(_ScoreMetric):
    """Streaming :func:`hierloss.metrics.auroc` (``average='weighted'`` by default), synchronised under DDP."""

    def __init__(self, average: str | None = "weighted", **kwargs: Any) -> None:
        super().__init__(average, **kwargs)

    def compute(self) -> Tensor:
        """AUROC of everything seen."""
        return auroc(dim_zero_cat(self.preds), dim_zero_cat(self.target), average=self.average)


class AveragePrecision(_ScoreMetric):
    """Streaming :func:`hierloss.metrics.average_precision` (``'micro'`` by default), synchronised under DDP."""

    def __init__(self, average: str | None = "micro", **kwargs: Any) -> None:
        super().__init__(average, **kwargs)

    def compute(self) -> Tensor:
        """Average precision of everything seen."""
        return average_precision(dim_zero_cat(self.preds), dim_zero_cat(self.target), average=self.average)
