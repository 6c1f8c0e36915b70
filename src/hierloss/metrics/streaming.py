"""Streaming metrics with DDP synchronisation, as torchmetrics ``Metric`` classes (``pip install hierloss[metrics]``).

States are sums (``dist_reduce_fx="sum"``) or concatenations (``"cat"``), so ``compute()`` on any rank of a
``torch.distributed`` job returns the metric of the union of every rank's updates, ranks that saw no batch
included.

Each class validates its inputs in ``update()`` when ``validate_args=True`` (the default): NaN scores and targets
other than 0/1 are a ``ValueError`` at the batch that holds them. These checks read the batch back to the host (a GPU
synchronisation); with ``validate_args=False`` ``update()`` reads nothing back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat
except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError("hierloss.metrics.streaming needs torchmetrics: pip install 'hierloss[metrics]'") from err

from hierloss.hierarchy import Hierarchy
from hierloss.metrics._inputs import check_no_nan, check_threshold, scores_for, targets_like
from hierloss.metrics.consistency import _edge_flags
from hierloss.metrics.hierarchical_prf import _augmented_sets, _check_arguments, _prf_counts, _prf_from_counts
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
        from_logits: the predictions are logits, compared without a sigmoid (as
            :func:`hierloss.metrics.edge_violations` compares them: large logits keep their order).
        validate_args: refuse NaN predictions in ``update()`` (naming the label); ``False`` reads nothing back.
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
                 validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_threshold(threshold)
        self.hierarchy = hierarchy
        self.threshold = threshold
        self.from_logits = from_logits
        self.validate_args = validate_args
        self.register_buffer("edge_index", hierarchy.edge_index.clone(), persistent=False)
        self.add_state("violated", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("edge_violated", default=torch.zeros(hierarchy.num_edges, dtype=torch.long),
                       dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor) -> None:
        """Add a batch of ``(N, C)`` predictions."""
        values = scores_for(preds, self.hierarchy, from_logits=False, validate_args=self.validate_args)
        flags = _edge_flags(values, self.edge_index.to(values.device), self.threshold, self.from_logits)
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
        threshold: a label is predicted when its score is above it; in ``(0, 1)``.
        zero_division: the value of a ratio whose denominator is 0 (a number).
        from_logits: the predictions are logits, compared with ``logit(threshold)`` without a sigmoid (as
            :func:`hierloss.metrics.hierarchical_prf` compares them: exact for float32 logits, large ones included).
        validate_args: refuse NaN scores and non-0/1 targets in ``update()``; ``False`` reads nothing back.
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
                 zero_division: float = 0.0, from_logits: bool = False, validate_args: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_arguments(average, threshold, zero_division)
        self.hierarchy, self.average, self.threshold, self.zero_division = hierarchy, average, threshold, zero_division
        self.from_logits, self.validate_args = from_logits, validate_args
        shape = (hierarchy.num_labels,) if average == "macro" else ()
        for name in ("inter", "n_pred", "n_true"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` scores and 0/1 targets."""
        predicted, actual = _augmented_sets(preds, target, self.hierarchy, self.threshold, self.from_logits,
                                           self.validate_args)
        inter, n_pred, n_true = _prf_counts(predicted, actual, self.average)
        if self.average == "samples":  # keep sums of the per-sample ratios
            inter, n_pred, n_true = (v.sum() for v in _prf_from_counts(inter, n_pred, n_true, self.zero_division))
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
        p, r, f = _prf_from_counts(self.inter, self.n_pred, self.n_true, self.zero_division)
        if self.average == "macro":
            return p.mean(), r.mean(), f.mean()
        return p, r, f


_GATHER_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int16,
                  torch.int32, torch.int64, torch.bool)


def _gather_rows(state: Tensor, group: Any = None) -> list[Tensor]:
    """All-gather a ``(rows, C)`` state from every rank of ``group``, ranks with no rows at all included.

    torchmetrics stands in ``torch.tensor([])`` (1-d, the metric's default dtype) for a rank that never called
    ``update()``; its shape and dtype then differ from the other ranks' and gloo aborts the process. Here the ranks
    first share ``(rows, columns, dtype)``; a rank without a 2-d state sends ``(0, C)`` rows of the others' dtype.
    Every rank reads the same table, so a mismatch raises on every rank instead of leaving one blocked.

    Returns:
        One tensor per rank, in rank order: ``(rows_r, C)``, or the local state on every rank if none updated.
    """
    world = dist.get_world_size(group)
    local = state.contiguous()
    shaped = local.ndim == 2
    header = torch.tensor([local.shape[0] if shaped else 0, local.shape[1] if shaped else -1,
                           _GATHER_DTYPES.index(local.dtype) if shaped else -1], device=local.device)
    headers = [torch.empty_like(header) for _ in range(world)]
    dist.all_gather(headers, header, group=group)
    table = [tuple(int(v) for v in row) for row in torch.stack(headers).cpu().tolist()]
    kinds = {(width, code) for _, width, code in table if width >= 0}
    if len(kinds) > 1:
        raise ValueError(f"ranks hold (rows, labels, dtype) {[(r, w, _GATHER_DTYPES[c]) for r, w, c in table]}; "
                         "every rank must update with the same number of labels")
    if not kinds:  # no rank saw a batch
        return [local] * world
    rows = max(r for r, _, _ in table)
    width, code = kinds.pop()
    padded = torch.zeros((rows, width), dtype=_GATHER_DTYPES[code], device=local.device)
    if rows == 0:  # batches of zero rows only: every rank gets the same (0, C)
        return [padded] * world
    if shaped:
        padded[:local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return [g[:r] for g, (r, _, _) in zip(gathered, table)]


class _ScoreMetric(Metric):
    """Keeps every batch (``"cat"`` states); the ranking metrics need all scores at once."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    preds: list[Tensor]  # local state; inside compute() on several ranks, the gathered (N, C) tensor
    target: list[Tensor]

    def __init__(self, average: str | None, validate_args: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", _gather_rows)  # ranks that saw no batch included
        super().__init__(**kwargs)
        self.average = average
        self.validate_args = validate_args
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, C)`` scores and 0/1 targets."""
        if preds.ndim != 2 or tuple(target.shape) != tuple(preds.shape):
            raise ValueError(f"Expected `preds` and `target` of the same shape (N, C), got {tuple(preds.shape)} and "
                             f"{tuple(target.shape)}")
        if self.preds and self.preds[-1].shape[1] != preds.shape[1]:
            raise ValueError(f"Expected `preds.shape[1]` to be {self.preds[-1].shape[1]} like the earlier batches, "
                             f"got {preds.shape[1]}")
        if self.validate_args:
            check_no_nan(preds, "preds")
        truth = targets_like(target.detach(), preds, validate_args=self.validate_args)
        self.preds.append(preds.detach().double())
        self.target.append(truth.to(torch.uint8))

    def sync(self, dist_sync_fn: Any = None, process_group: Any = None, should_sync: bool = True,
             distributed_available: Any = None) -> None:
        """torchmetrics' ``sync``, gathering with this metric's ``dist_sync_fn`` unless another is passed."""
        super().sync(dist_sync_fn or self.dist_sync_fn, process_group, should_sync, distributed_available)

    def _seen(self) -> tuple[Tensor, Tensor]:
        """Every score and target seen (by every rank, inside ``compute``), as ``(N, C)``; ``(0, 0)`` if none."""
        states = []
        state: Any
        for state in (self.preds, self.target):
            if isinstance(state, list):
                state = dim_zero_cat(state) if state else torch.zeros(0, 0, device=self.device)
            states.append(state if state.ndim == 2 else state.reshape(0, 0))
        return states[0], states[1]


class AUROC(_ScoreMetric):
    """Streaming :func:`hierloss.metrics.auroc` (``average='weighted'`` by default), synchronised under DDP.

    Memory grows with the number of samples seen (all scores are kept until ``reset()``). Under DDP a rank that
    never called ``update()`` contributes nothing: every rank computes the AUROC of the union of the others' batches.

    Args:
        average: ``'weighted'``, ``'macro'`` or ``None`` (per label).
        validate_args: refuse NaN scores and non-0/1 targets in ``update()``; ``False`` reads nothing back.
        kwargs: passed to :class:`torchmetrics.Metric` (a ``dist_sync_fn`` replaces the gather that lets a rank
            without batches take part).
    """

    def __init__(self, average: str | None = "weighted", validate_args: bool = True, **kwargs: Any) -> None:
        if average not in ("weighted", "macro", None):
            raise ValueError(f"average must be 'weighted', 'macro' or None, got {average!r}")
        super().__init__(average, validate_args, **kwargs)

    def compute(self) -> Tensor:
        """AUROC of everything seen (NaN if nothing was)."""
        preds, target = self._seen()
        return auroc(preds, target, average=self.average, validate_args=False)  # validated in update()


class AveragePrecision(_ScoreMetric):
    """Streaming :func:`hierloss.metrics.average_precision` (``'micro'`` by default), synchronised under DDP.

    Memory grows with the number of samples seen (all scores are kept until ``reset()``). Ranks that never called
    ``update()`` are handled as in :class:`AUROC`.

    Args:
        average: ``'micro'``, ``'macro'`` or ``None`` (per label).
        validate_args: refuse NaN scores and non-0/1 targets in ``update()``; ``False`` reads nothing back.
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    def __init__(self, average: str | None = "micro", validate_args: bool = True, **kwargs: Any) -> None:
        if average not in ("micro", "macro", None):
            raise ValueError(f"average must be 'micro', 'macro' or None, got {average!r}")
        super().__init__(average, validate_args, **kwargs)

    def compute(self) -> Tensor:
        """Average precision of everything seen (NaN if nothing was)."""
        preds, target = self._seen()
        return average_precision(preds, target, average=self.average, validate_args=False)  # validated in update()
