"""Evaluation: AUROC (weighted, macro, per label) and violation rates, with :mod:`hierloss.metrics`.

:func:`evaluate` runs a model over a loader and scores it with the library's streaming metric classes
(``hierloss.metrics.AUROC`` and ``ViolationRate``, torchmetrics ``Metric`` objects): in a ``torchrun`` job each
process evaluates its shard and the metrics are synchronised across processes, so every process gets the scores
of the whole split. :func:`score` scores tensors already in hand (``score.py``, and NaN targets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from tqdm.auto import tqdm

from hierloss import Hierarchy
from hierloss.metrics import AUROC, ViolationRate, auroc, violation_rate

__all__ = ["AUROC_AVERAGES", "Evaluation", "GatheredRows", "Scores", "evaluate", "score", "split_batch"]

#: ``--auroc-average``: how the validation AUROC that picks the best-AUROC checkpoint averages over labels.
AUROC_AVERAGES: tuple[str, ...] = ("macro", "weighted")


@dataclass(frozen=True)
class Scores:
    """What the example reports for one split.

    Attributes:
        weighted_auroc: AUROC averaged over labels weighted by their number of positives (the paper's metric);
            labels with one class only are left out. NaN when no label has both classes.
        macro_auroc: the unweighted mean over labels (what Keras's ``AUC(multi_label=True)`` averages).
        per_label_auroc: ``{label: AUROC}``; ``None`` where a label has only one class.
        violation_rate: fraction of images with some edge ``p_parent < 0.5 < p_child``.
        violation_rate_any_threshold: fraction of images with some edge ``p_child > p_parent`` (the incoherence
            that ranking metrics see).
        loss: mean loss over the split, when computed.
    """

    weighted_auroc: float
    macro_auroc: float
    per_label_auroc: dict[str, float | None]
    violation_rate: float
    violation_rate_any_threshold: float
    loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def auroc(self, average: str) -> float:
        """``weighted_auroc`` or ``macro_auroc``."""
        if average not in AUROC_AVERAGES:
            raise ValueError(f"average must be one of {AUROC_AVERAGES}, got {average!r}")
        return self.weighted_auroc if average == "weighted" else self.macro_auroc

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes ``None``."""
        return {
            "weighted_auroc": _finite_or_none(self.weighted_auroc),
            "macro_auroc": _finite_or_none(self.macro_auroc),
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
    """Score predicted probabilities against targets held in memory.

    Args:
        probs: ``(N, C)`` probabilities (columns in ``hierarchy.labels`` order).
        target: ``(N, C)`` 0/1 targets; NaN entries (policy ``'ignore'``) are left out of their label's AUROC.
        hierarchy: the label hierarchy.
        loss: the mean loss, to carry along.
    """
    probs = probs.double().cpu()
    target = target.double().cpu()
    per_label = _per_label_auroc(probs, target)
    keep = ~torch.isnan(per_label)
    positives = torch.nan_to_num(target, nan=0.0).sum(0)
    if not bool(torch.isnan(target).any()):
        weighted = float(auroc(probs, target, average="weighted"))
    else:  # the same support weighting, each label over its known rows
        weighted = float((per_label[keep] * positives[keep]).sum() / positives[keep].sum()) if bool(keep.any()) \
            else math.nan
    return Scores(
        weighted_auroc=weighted,
        macro_auroc=float(per_label[keep].mean()) if bool(keep.any()) else math.nan,
        per_label_auroc={name: _finite_or_none(float(v)) for name, v in zip(hierarchy.labels, per_label)},
        violation_rate=float(violation_rate(probs, hierarchy, threshold=0.5)),
        violation_rate_any_threshold=float(violation_rate(probs, hierarchy, threshold=None)),
        loss=loss,
    )


class GatheredRows(Metric):
    """The rows of one evaluation, kept whole and gathered from every process (torchmetrics ``"cat"`` states).

    ``compute()`` returns ``{'index', 'target', *columns}`` sorted by ``index`` (the dataset order), plus
    ``'loss'``: the mean of the per-batch losses weighted by batch size (NaN when no loss was given).

    Args:
        columns: names of the ``(N, C)`` float columns to keep (``'probs'``; ``'mean'`` and ``'std'``).
    """

    full_state_update = False
    index: list[Tensor]
    target: list[Tensor]
    loss_total: Tensor
    loss_count: Tensor

    def __init__(self, columns: Sequence[str] = ("probs",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = tuple(columns)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        for name in self.columns:
            self.add_state(f"column_{name}", default=[], dist_reduce_fx="cat")
        self.add_state("loss_total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("loss_count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, index: Tensor, target: Tensor, loss: Tensor | None = None, **columns: Tensor) -> None:
        """Add a batch: dataset indices ``(B,)``, targets ``(B, C)``, the batch's mean loss, and the columns."""
        if set(columns) != set(self.columns):
            raise ValueError(f"Expected the columns {self.columns}, got {tuple(columns)}")
        self.index.append(index.long())
        self.target.append(target.double())
        for name, value in columns.items():
            getattr(self, f"column_{name}").append(value.detach().double())
        if loss is not None:
            self.loss_total += loss.detach().double() * len(index)
            self.loss_count += len(index)

    def compute(self) -> dict[str, Tensor]:
        """Everything seen, in index order (on every process of a distributed run)."""
        index = dim_zero_cat(self.index)
        order = torch.argsort(index)
        out = {"index": index[order], "target": dim_zero_cat(self.target)[order]}
        for name in self.columns:
            out[name] = dim_zero_cat(getattr(self, f"column_{name}"))[order]
        out["loss"] = torch.where(self.loss_count > 0, self.loss_total / self.loss_count.clamp_min(1),
                                  torch.full_like(self.loss_total, math.nan))
        return out


def split_batch(batch: Sequence[Any], seen: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(inputs, targets, indices)`` of a batch of ``(inputs, targets, indices)`` (:class:`chexpert_example.
    distributed.Indexed`) or of ``(inputs, targets)``, whose indices are then counted from ``seen`` (one process,
    loader in dataset order)."""
    if len(batch) == 3:
        images, target, index = batch
        return images, target, torch.as_tensor(index)
    images, target = batch
    return images, target, torch.arange(seen, seen + len(target))


@dataclass(frozen=True)
class Evaluation:
    """The outcome of :func:`evaluate`: scores, and the rows in dataset order (CPU tensors)."""

    scores: Scores
    probs: Tensor
    targets: Tensor
    index: Tensor


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Sequence[Any]], hierarchy: Hierarchy, device: torch.device,
             criterion: nn.Module | None = None, postprocess: nn.Module | None = None, amp: bool = False,
             max_batches: int | None = None, progress: bool = False, desc: str = "eval") -> Evaluation:
    """Evaluate ``model`` (in eval mode) on ``loader`` and score it; distributed runs give every process the
    scores of the whole split, each process having evaluated its shard.

    Probabilities are ``σ(logits)``, through ``postprocess`` when given (``MaxConstraint`` for ``mcloss``). The
    scores come from ``hierloss.metrics.AUROC`` (per label, weighted, macro) and ``ViolationRate`` (at 0.5 and
    at any threshold), whose states torchmetrics synchronises across processes.

    Args:
        model: the model (not the DDP wrapper).
        loader: batches of ``(images, targets, indices)`` (or ``(images, targets)`` in one process).
        hierarchy: the label hierarchy.
        device: where to run.
        criterion: the loss, averaged over the split into ``Scores.loss``.
        postprocess: maps probabilities to predictions.
        amp: float16 autocast (CUDA only).
        max_batches: stop after this many batches.
        progress: show a progress bar.
        desc: the progress bar's label.

    Raises:
        ValueError: when a target is NaN (evaluation needs 0/1 targets: the uncertainty policy 'ignore' applied
            to an evaluation CSV with -1 labels).
    """
    model.eval()
    rows = GatheredRows().to(device)
    per_label, weighted, macro = (AUROC(average=a).to(device) for a in (None, "weighted", "macro"))
    violations = ViolationRate(hierarchy, threshold=0.5).to(device)
    violations_any = ViolationRate(hierarchy, threshold=None).to(device)
    seen = 0
    for step, batch in enumerate(tqdm(loader, desc=desc, leave=False, disable=not progress)):
        if max_batches is not None and step >= max_batches:
            break
        images, target, index = split_batch(batch, seen)
        if bool(torch.isnan(target).any()):  # a CPU tensor from the loader: no device synchronisation
            raise ValueError("evaluation needs 0/1 targets, got NaN: the uncertainty policy 'ignore' on an "
                             "evaluation CSV with uncertain (-1) labels; use 'zeros' or 'ones' for it")
        seen += len(target)
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)
            loss = criterion(logits, target).float() if criterion is not None else None
        probs = torch.sigmoid(logits.float())
        if postprocess is not None:
            probs = postprocess(probs)
        rows.update(index.to(device), target, loss, probs=probs)
        for metric in (per_label, weighted, macro):
            metric.update(probs, target)
        violations.update(probs)
        violations_any.update(probs)
    gathered = rows.compute()
    per_label_values = per_label.compute().cpu()
    loss_value = float(gathered["loss"])
    scores = Scores(
        weighted_auroc=float(weighted.compute()),
        macro_auroc=float(macro.compute()),
        per_label_auroc={name: _finite_or_none(float(v)) for name, v in zip(hierarchy.labels, per_label_values)},
        violation_rate=float(violations.compute()),
        violation_rate_any_threshold=float(violations_any.compute()),
        loss=loss_value if criterion is not None else None,
    )
    return Evaluation(scores, gathered["probs"].float().cpu(), gathered["target"].float().cpu(),
                      gathered["index"].cpu())
