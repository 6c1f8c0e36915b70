"""Training as the reference's Keras callbacks do it: Adam, reduce-on-plateau, early stopping, best checkpoints.

The reference (the-mercury/CIHMLC, ``src/helpers/model_utils.py``, ``get_callbacks``) monitors the validation
loss — the HBCE value, hard penalty included: the penalty has no gradient but it moves the monitored loss —
with ``ReduceLROnPlateau(factor=0.9, patience=1, min_lr=1e-8)``, ``EarlyStopping(patience=10,
restore_best_weights=True)``, and keeps two checkpoints, best validation loss and best validation AUC
(``AUC(multi_label=True)``: the unweighted mean over labels). Keras's rules, reproduced here:

* plateau: an epoch improves when ``value < best − 1e-4`` (``min_delta``; ``> best + 1e-4`` when maximising);
  the learning rate is multiplied by ``factor`` (not below ``min_lr``) after ``patience`` epochs without
  improvement, and the count restarts;
* early stopping: an epoch improves when ``value < best`` (strictly); training stops once ``patience`` epochs
  in a row did not improve;
* checkpoints: written when the value improves strictly.

In a ``torchrun`` job the model is wrapped in ``DistributedDataParallel``, every process computes the same
(synchronised) validation values and so takes the same decisions, and rank 0 writes the checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from chexpert_example.distributed import Processes, all_reduce_sum, barrier, broadcast_buffers
from chexpert_example.evaluation import AUROC_AVERAGES, evaluate
from hierloss import Hierarchy

__all__ = ["BEST", "LAST", "MONITORS", "TrainConfig", "fit", "load_checkpoint", "plateau_scheduler"]

LAST = "last.pt"
#: The best checkpoint per monitored value: ``best_loss.pt`` (the reference's shipped model), ``best_auroc.pt``.
BEST = {"loss": "best_loss.pt", "auroc": "best_auroc.pt"}
#: ``--monitor``: the validation value that drives the learning rate, early stopping and the final model.
MONITORS: tuple[str, ...] = ("loss", "auroc")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the reference's.

    Attributes:
        epochs: maximum number of epochs (100).
        lr: Adam's learning rate (1e-4).
        adam_eps: Adam's ε (Keras's 1e-7; PyTorch's default is 1e-8).
        lr_factor: reduce-on-plateau factor (0.9).
        lr_patience: epochs without improvement before the learning rate is reduced (1, Keras's meaning).
        lr_min_delta: the improvement the plateau rule requires (Keras's 1e-4, absolute).
        min_lr: the learning rate is not reduced below this (1e-8).
        early_stopping: epochs without improvement before training stops (10).
        monitor: ``'loss'`` (validation loss, the reference) or ``'auroc'`` (validation AUROC).
        auroc_average: the validation AUROC's average over labels, ``'macro'`` (the reference's Keras AUC) or
            ``'weighted'`` (the paper's test metric).
        amp: mixed precision (float16 autocast + gradient scaling); used on CUDA only. The reference: fp32.
        progress: show progress bars.
        max_batches: stop each epoch (and each evaluation) after this many batches (``None``: all); for smoke
            tests.
    """

    epochs: int = 100
    lr: float = 1e-4
    adam_eps: float = 1e-7
    lr_factor: float = 0.9
    lr_patience: int = 1
    lr_min_delta: float = 1e-4
    min_lr: float = 1e-8
    early_stopping: int = 10
    monitor: str = "loss"
    auroc_average: str = "macro"
    amp: bool = False
    progress: bool = True
    max_batches: int | None = None

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        if self.auroc_average not in AUROC_AVERAGES:
            raise ValueError(f"auroc_average must be one of {AUROC_AVERAGES}, got {self.auroc_average!r}")
        if self.lr_patience < 1:
            raise ValueError(f"lr_patience must be >= 1, got {self.lr_patience}")


def plateau_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                      mode: str) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Keras's ``ReduceLROnPlateau`` as PyTorch's: Keras reduces when ``wait >= patience``, PyTorch when
    ``bad epochs > patience``, hence ``patience − 1``; Keras's ``min_delta`` is an absolute threshold."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=config.lr_factor, patience=config.lr_patience - 1,
        threshold=config.lr_min_delta, threshold_mode="abs", min_lr=config.min_lr)


def _batches(loader: Iterable[Any], limit: int | None) -> Iterator[Any]:
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def _train_epoch(model: nn.Module, loader: DataLoader[Any], criterion: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
                 config: TrainConfig, processes: Processes, desc: str) -> tuple[float, int]:
    """One epoch; returns (mean training loss, images seen), over every process."""
    model.train()
    total = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    steps = len(loader) if config.max_batches is None else min(len(loader), config.max_batches)
    bar = tqdm(_batches(loader, config.max_batches), desc=desc, leave=False,
               disable=not (config.progress and processes.is_main), total=steps)
    for step, batch in enumerate(bar):
        images, target = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, config.amp):
            loss = criterion(model(images), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach().double() * len(images)
        seen += len(images)
        if config.progress and processes.is_main and step % 20 == 0:  # the only host sync: for the bar
            bar.set_postfix(loss=f"{float(total) / seen:.4f}")
    sums = all_reduce_sum(torch.stack([total, torch.tensor(float(seen), device=device, dtype=torch.float64)]),
                          processes)
    return float(sums[0]) / max(float(sums[1]), 1.0), int(sums[1])


def _rng_state(loader: DataLoader[Any]) -> dict[str, Any]:
    """The random state that decides the next epoch: torch's (augmentation, dropout) and the loader's (order)."""
    generator = getattr(loader, "generator", None)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "loader": generator.get_state() if isinstance(generator, torch.Generator) else None,
    }


def _set_rng_state(state: dict[str, Any] | None, loader: DataLoader[Any]) -> None:
    """Restore :func:`_rng_state`, so that a resumed run continues as the uninterrupted one would."""
    if state is None:
        return
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(loader, "generator", None)
    if state["loader"] is not None and isinstance(generator, torch.Generator):
        generator.set_state(state["loader"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`fit` (``OUT/last.pt``, ``OUT/best_loss.pt``, ``OUT/best_auroc.pt``)."""
    checkpoint: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=False)
    return checkpoint


def _improves(value: float, best: float, mode: str, delta: float = 0.0) -> bool:
    if math.isnan(value):
        return False
    return value < best - delta if mode == "min" else value > best + delta


def fit(model: nn.Module, criterion: nn.Module, train_loader: DataLoader[Any], valid_loader: Iterable[Any],
        hierarchy: Hierarchy, config: TrainConfig, out_dir: Path, device: torch.device,
        processes: Processes | None = None, resume: Path | None = None, metadata: dict[str, Any] | None = None,
        postprocess: nn.Module | None = None) -> dict[str, Any]:
    """Train with validation after every epoch; checkpoints in ``out_dir``.

    Every epoch writes ``last.pt`` (model, optimiser, scheduler, gradient scaler, history, early-stopping state,
    ``metadata``, and the random state: a resumed one-process run repeats the uninterrupted one on the CPU); an
    epoch that lowers the validation loss writes ``best_loss.pt``, one that raises the validation AUROC
    ``best_auroc.pt``. ``resume`` continues from such a ``last.pt``. ``postprocess`` is passed to
    :func:`chexpert_example.evaluation.evaluate`. The model is left with the last epoch's weights: load
    ``out_dir / BEST[config.monitor]`` for the best ones (the reference's ``restore_best_weights``).

    Returns:
        ``{'history': [per-epoch dicts], 'best_epoch': epoch of the best monitored value, 'best': {'loss': ...,
        'auroc': ...}, 'best_epochs': {'loss': ..., 'auroc': ...}, 'stopped_early': bool}``.
    """
    processes = processes or Processes()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    criterion.to(device)
    if postprocess is not None:
        postprocess.to(device)
    trained: nn.Module = model
    if processes.distributed:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps)
    mode = "min" if config.monitor == "loss" else "max"
    scheduler = plateau_scheduler(optimizer, config, mode)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    history: list[dict[str, Any]] = []
    best = {"loss": math.inf, "auroc": -math.inf}
    best_epochs = {"loss": 0, "auroc": 0}
    bad_epochs, start = 0, 1
    if resume is not None:
        state = load_checkpoint(resume, device)
        if tuple(state["labels"]) != hierarchy.labels:
            raise ValueError(f"--resume {resume}: the checkpoint's labels {state['labels']} differ from this "
                             f"run's {hierarchy.labels}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state.get("rng"), train_loader)
        history = list(state["history"])
        best, best_epochs, bad_epochs = dict(state["best"]), dict(state["best_epochs"]), state["bad_epochs"]
        start = state["epoch"] + 1
    stopped_early = False
    for epoch in range(start, config.epochs + 1):
        if bad_epochs >= config.early_stopping:
            stopped_early = True
            break
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        began = time.perf_counter()
        train_loss, seen = _train_epoch(trained, train_loader, criterion, optimizer, scaler, device, config,
                                        processes, desc=f"epoch {epoch}/{config.epochs}")
        train_seconds = time.perf_counter() - began
        broadcast_buffers(model, processes)  # every process validates (and rank 0 saves) the same model
        evaluation = evaluate(model, valid_loader, hierarchy, device, criterion, postprocess, config.amp,
                              config.max_batches, config.progress and processes.is_main, desc="validation")
        scores = evaluation.scores
        valid_loss = math.nan if scores.loss is None else scores.loss
        values = {"loss": valid_loss, "auroc": scores.auroc(config.auroc_average)}
        improved = {"loss": _improves(values["loss"], best["loss"], "min"),
                    "auroc": _improves(values["auroc"], best["auroc"], "max")}
        for key in improved:
            if improved[key]:
                best[key], best_epochs[key] = values[key], epoch
        bad_epochs = 0 if improved[config.monitor] else bad_epochs + 1
        monitored = values[config.monitor]
        scheduler.step(monitored if math.isfinite(monitored) else (math.inf if mode == "min" else -math.inf))
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": scores.loss,
            "valid_weighted_auroc": scores.as_dict()["weighted_auroc"],
            "valid_macro_auroc": scores.as_dict()["macro_auroc"],
            "valid_violation_rate": scores.violation_rate,
            "valid_violation_rate_any_threshold": scores.violation_rate_any_threshold,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": train_seconds,
            "train_images_per_second": seen / train_seconds if train_seconds > 0 else None,
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        if processes.is_main:
            tqdm.write(f"epoch {epoch}: train loss {train_loss:.4f}, valid loss {valid_loss:.4f}, valid AUROC "
                       f"{config.auroc_average} {values['auroc']:.4f} / weighted {scores.weighted_auroc:.4f}, "
                       f"violation rate {scores.violation_rate:.4f}, lr {row['lr']:.3g}, {row['seconds']:.1f} s")
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "best_epochs": best_epochs,
                "bad_epochs": bad_epochs,
                "labels": hierarchy.labels,
                "train_config": asdict(config),
                "rng": _rng_state(train_loader),
                **(metadata or {}),
            }
            torch.save(state, out_dir / LAST)
            for key, name in BEST.items():
                if improved[key]:
                    torch.save({**{k: state[k] for k in ("model", "epoch", "labels", *(metadata or {}))},
                                "monitor": key, "value": values[key]}, out_dir / name)
        barrier(processes)
    return {"history": history, "best_epoch": best_epochs[config.monitor], "best": best, "best_epochs": best_epochs,
            "stopped_early": stopped_early}

