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
from hierloss.metrics._inputs import scores_for
from hierloss.metrics.consistency import check_threshold, edge_flags
from hierloss.metrics.hierarchical_prf import augmented_sets, check_average, prf_counts, prf_from_counts
from hierloss.metrics.scores import auroc, average_precision

__all__ = ["AUROC", "AveragePrecision", "HierarchicalF1", "ViolationRate"]


class ViolationRate(Metric):
    """Fraction of samples with at least one violated edge, accumulated over batches.

    Also keeps per-edge violation counts: :meth:`edge_rates` returns the ``(E,)`` fraction of samples violating
    each edge (the streaming :func:`hierloss.metrics.edge_violation_rates`).

    Args:
        hierarchy: the label hierarchy.
        threshold: decision threshold in ``(0, 1)``, or ``None`` for incoherence at any threshold (see
            :func:`hierloss.metrics.violation_rate`).
        from_logits: apply a sigmoid to the predictions first.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> metric = ViolationRate(Hierarchy.from_edges([("a", "b")]))
        >>> metric.update(torch.tensor([[0.4, 0.6], [0.9, 0.3]]))
        >>> metric.update(torch.tensor([[0.7, 0.8]]))
        >>> metric.compute()
        tensor(0.3333)
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False
    edge_index: Tensor
    violated: Tensor
    edge_violated: Tensor
    total: Tensor

    def __init__(self, hierarchy: Hierarchy, threshold: float | None = 0.5, from_logits: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_threshold(threshold)
        self.hierarchy = hierarchy
        self.threshold = threshold
        self.from_logits = from_logits
        self.register_buffer("edge_index", hierarchy.edge_index.clone(), persistent=False)
        self.add_state("violated", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("edge_violated", default=torch.zeros(hierarchy.num_edges, dtype=torch.long),
                       dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor) -> None:
        """Add a batch of ``(N, C)`` predictions."""
        scores = scores_for(preds, self.hierarchy, self.from_logits)
        flags = edge_flags(scores, self.edge_index.to(scores.device), self.threshold)
        self.violated += flags.any(dim=1).sum()
        self.edge_violated += flags.sum(0)
        self.total += flags.shape[0]

    def compute(self) -> Tensor:
        """Violation rate over everything seen (0 if nothing was)."""
        return self.violated.float() / self.total.clamp_min(1).float()

    def edge_rates(self) -> Tensor:
        """``(E,)`` fraction of everything seen that violates each edge (synchronised like ``compute``)."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync,
                               distributed_available=self.distributed_available_fn):
            return self.edge_violated.float() / self.total.clamp_min(1).float()


class HierarchicalF1(Metric):
    """Hierarchical precision / recall / F1 accumulated over batches; ``compute()`` returns ``hF``.

    :meth:`compute_all` returns ``(hP, hR, hF)``. The result equals :func:`hierloss.metrics.hierarchical_prf` on
    the concatenation of the batches: ``'micro'`` accumulates the three totals, ``'macro'`` the three counts per
    label, ``'samples'`` the sums of the per-sample ratios.

    Args:
        hierarchy: the label hierarchy.
        average: ``'micro'``, ``'macro'`` or ``'samples'``.
        threshold: a label is predicted when its score is above it.
        zero_division: the value of a ratio whose denominator is 0.
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    inter: Tensor
    n_pred: Tensor
    n_true: Tensor
    samples: Tensor

    def __init__(self, hierarchy: Hierarchy, average: str = "micro", threshold: float = 0.5,
                 zero_division: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_average(average)
        self.hierarchy, self.average, self.threshold, self.zero_division = hierarchy, average, threshold, zero_division
        shape = (hierarchy.num_labels,) if average == "macro" else ()
        for name in ("inter", "n_pred", "n_true"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` scores and 0/1 targets."""
        predicted, actual = augmented_sets(preds, target, self.hierarchy, self.threshold)
        inter, n_pred, n_true = prf_counts(predicted, actual, self.average)
        if self.average == "samples":  # keep sums of the per-sample ratios
            inter, n_pred, n_true = (v.sum() for v in prf_from_counts(inter, n_pred, n_true, self.zero_division))
        self.inter += inter
        self.n_pred += n_pred
        self.n_true += n_true
        self.samples += predicted.shape[0]

    def compute_all(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(hP, hR, hF)`` over everything seen, synchronised across processes like ``compute()``.

        With ``'samples'`` and nothing seen, each is ``zero_division``.
        """
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync,
                               distributed_available=self.distributed_available_fn):
            return self._prf()

    def compute(self) -> Tensor:
        """Hierarchical F1 over everything seen."""
        return self._prf()[2]

    def _prf(self) -> tuple[Tensor, Tensor, Tensor]:
        if self.average == "samples":
            n = self.samples.double()
            zd = torch.full_like(self.inter, self.zero_division)
            p, r, f = (torch.where(n > 0, v / n.clamp_min(1), zd) for v in (self.inter, self.n_pred, self.n_true))
            return p, r, f
        p, r, f = prf_from_counts(self.inter, self.n_pred, self.n_true, self.zero_division)
        if self.average == "macro":
            return p.mean(), r.mean(), f.mean()
        return p, r, f


class _ScoreMetric(Metric):
    """Keeps every batch (``"cat"`` states); the ranking metrics need all scores at once."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    preds: list[Tensor]
    target: list[Tensor]

    def __init__(self, average: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.average = average
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` scores and 0/1 targets."""
        if preds.ndim != 2 or tuple(target.shape) != tuple(preds.shape):
            raise ValueError(f"Expected `preds` and `target` of the same shape (N, C), got {tuple(preds.shape)} and "
                             f"{tuple(target.shape)}")
        self.preds.append(preds.detach().double())
        self.target.append(target.detach().to(torch.uint8))


class AUROC(_ScoreMetric):
    """Streaming :func:`hierloss.metrics.auroc` (``average='weighted'`` by default), synchronised under DDP.

    Memory grows with the number of samples seen (all scores are kept until ``reset()``).
    """

    def __init__(self, average: str | None = "weighted", **kwargs: Any) -> None:
        if average not in ("weighted", "macro", None):
            raise ValueError(f"average must be 'weighted', 'macro' or None, got {average!r}")
        super().__init__(average, **kwargs)

    def compute(self) -> Tensor:
        """AUROC of everything seen."""
        return auroc(dim_zero_cat(self.preds), dim_zero_cat(self.target), average=self.average)


class AveragePrecision(_ScoreMetric):
    """Streaming :func:`hierloss.metrics.average_precision` (``'micro'`` by default), synchronised under DDP.

    Memory grows with the number of samples seen (all scores are kept until ``reset()``).
    """

    def __init__(self, average: str | None = "micro", **kwargs: Any) -> None:
        if average not in ("micro", "macro", None):
            raise ValueError(f"average must be 'micro', 'macro' or None, got {average!r}")
        super().__init__(average, **kwargs)

    def compute(self) -> Tensor:
        """Average precision of everything seen."""
        return average_precision(dim_zero_cat(self.preds), dim_zero_cat(self.target), average=self.average)
