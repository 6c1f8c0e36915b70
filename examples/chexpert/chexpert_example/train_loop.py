"""Training: Adam, reduce-on-plateau, early stopping on validation weighted AUROC, checkpoints, resume, AMP."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from chexpert_example.evaluation import Scores, score
from hierloss import Hierarchy

__all__ = ["TrainConfig", "fit", "load_checkpoint", "predict"]

LAST = "last.pt"
BEST = "best.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the paper's optimiser and learning rate).

    Attributes:
        epochs: maximum number of epochs.
        lr: Adam's learning rate (the paper: 1e-4).
        lr_factor: ``ReduceLROnPlateau`` factor, on validation weighted AUROC.
        lr_patience: epochs without improvement before the learning rate is reduced.
        early_stopping: epochs without improvement of validation weighted AUROC before training stops.
        amp: mixed precision (float16 autocast + gradient scaling); used on CUDA only.
        progress: show progress bars.
        max_batches: stop each epoch (and each evaluation) after this many batches (``None``: all); for smoke
            tests.
    """

    epochs: int = 20
    lr: float = 1e-4
    lr_factor: float = 0.1
    lr_patience: int = 1
    early_stopping: int = 3
    amp: bool = True
    progress: bool = True
    max_batches: int | None = None


def _batches(loader: Iterable[Any], limit: int | None) -> Iterator[Any]:
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader[Any], device: torch.device, amp: bool = True,
            criterion: nn.Module | None = None, progress: bool = False, max_batches: int | None = None,
            desc: str = "eval", postprocess: nn.Module | None = None) -> tuple[Tensor, Tensor, float | None]:
    """Probabilities, targets and (with ``criterion``) the mean loss over ``loader``, model in eval mode.

    ``postprocess`` maps the sigmoid probabilities to predictions (``MaxConstraint`` for ``--loss mcloss``).

    Returns:
        ``(probs (N, C) float32 CPU, targets (N, C) CPU, mean loss or None)``.
    """
    model.eval()
    probs, targets, losses, count = [], [], 0.0, 0
    for images, target in tqdm(_batches(loader, max_batches), desc=desc, leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)
            if criterion is not None:
                losses += float(criterion(logits, target)) * len(images)
                count += len(images)
        batch_probs = torch.sigmoid(logits.float())
        probs.append((batch_probs if postprocess is None else postprocess(batch_probs)).cpu())
        targets.append(target.cpu())
    mean_loss = losses / count if criterion is not None and count else None
    return torch.cat(probs), torch.cat(targets), mean_loss


def _train_epoch(model: nn.Module, loader: DataLoader[Any], criterion: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
                 config: TrainConfig, desc: str) -> tuple[float, int]:
    """One epoch; returns (mean training loss, images seen)."""
    model.train()
    total = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(_batches(loader, config.max_batches), desc=desc, leave=False, disable=not config.progress,
               total=len(loader) if config.max_batches is None else min(len(loader), config.max_batches))
    for step, (images, target) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, config.amp):
            loss = criterion(model(images), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach() * len(images)
        seen += len(images)
        if config.progress and step % 20 == 0:  # the only host sync: for the bar, every 20 steps
            bar.set_postfix(loss=f"{float(total) / seen:.4f}")
    return float(total) / max(seen, 1), seen


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
    """A checkpoint written by :func:`fit` (``OUT/last.pt`` or ``OUT/best.pt``)."""
    checkpoint: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=False)
    return checkpoint


def fit(model: nn.Module, criterion: nn.Module, train_loader: DataLoader[Any], valid_loader: DataLoader[Any],
        hierarchy: Hierarchy, config: TrainConfig, out_dir: Path, device: torch.device,
        resume: Path | None = None, metadata: dict[str, Any] | None = None,
        postprocess: nn.Module | None = None) -> dict[str, Any]:
    """Train with validation after every epoch; checkpoints to ``out_dir/last.pt`` and ``out_dir/best.pt``.

    Every epoch writes ``last.pt`` (model, optimiser, scheduler, gradient scaler, history, early-stopping state,
    ``metadata``, and the random state: a resumed run repeats the uninterrupted one on the CPU); an epoch that
    improves validation weighted AUROC also writes ``best.pt``. ``resume`` continues
    from such a ``last.pt``. ``postprocess`` is passed to :func:`predict` for validation.

    Returns:
        ``{'history': [per-epoch dicts], 'best_epoch': int, 'best_weighted_auroc': float, 'stopped_early': bool}``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    criterion.to(device)
    if postprocess is not None:
        postprocess.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=config.lr_factor,
                                                           patience=config.lr_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    history: list[dict[str, Any]] = []
    best, best_epoch, bad_epochs, start = -math.inf, 0, 0, 1
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
        best, best_epoch, bad_epochs = state["best_weighted_auroc"], state["best_epoch"], state["bad_epochs"]
        start = state["epoch"] + 1
    stopped_early = False
    for epoch in range(start, config.epochs + 1):
        if bad_epochs >= config.early_stopping:
            stopped_early = True
            break
        began = time.perf_counter()
        train_loss, seen = _train_epoch(model, train_loader, criterion, optimizer, scaler, device, config,
                                        desc=f"epoch {epoch}/{config.epochs}")
        train_seconds = time.perf_counter() - began
        probs, targets, valid_loss = predict(model, valid_loader, device, config.amp, criterion, config.progress,
                                             config.max_batches, desc="validation", postprocess=postprocess)
        scores: Scores = score(probs, targets, hierarchy, valid_loss)
        monitored = scores.weighted_auroc if math.isfinite(scores.weighted_auroc) else -math.inf
        improved = monitored > best or best_epoch == 0
        if improved:
            best, best_epoch, bad_epochs = monitored, epoch, 0
        else:
            bad_epochs += 1
        scheduler.step(monitored)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_weighted_auroc": scores.as_dict()["weighted_auroc"],
            "valid_violation_rate": scores.violation_rate,
            "valid_violation_rate_any_threshold": scores.violation_rate_any_threshold,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": train_seconds,
            "train_images_per_second": seen / train_seconds if train_seconds > 0 else None,
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        shown_loss = math.nan if valid_loss is None else valid_loss
        tqdm.write(f"epoch {epoch}: train loss {train_loss:.4f}, valid loss {shown_loss:.4f}, valid weighted "
                   f"AUROC {scores.weighted_auroc:.4f}, violation rate {scores.violation_rate:.4f}, "
                   f"{row['seconds']:.1f} s")
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "history": history,
            "best_weighted_auroc": best,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "labels": hierarchy.labels,
            "train_config": asdict(config),
            "rng": _rng_state(train_loader),
            **(metadata or {}),
        }
        torch.save(state, out_dir / LAST)
        if improved:
            torch.save({key: state[key] for key in ("model", "epoch", "labels", *(metadata or {}))},
                       out_dir / BEST)
    return {"history": history, "best_epoch": best_epoch, "best_weighted_auroc": best,
            "stopped_early": stopped_early}
