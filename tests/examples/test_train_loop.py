"""Tests for chexpert_example.train_loop with a tiny model (core environment: no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from chexpert_example.criterion import build_criterion
from chexpert_example.evaluation import evaluate
from chexpert_example.train_loop import BEST, LAST, TrainConfig, fit, load_checkpoint, plateau_scheduler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hierloss.datasets import chexpert_hierarchy

HIERARCHY = chexpert_hierarchy()
TIMING = ("train_seconds", "train_images_per_second", "seconds")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 21))


def loaders(seed: int = 0, n: int = 48, signal: float = 1.0) -> tuple[DataLoader[tuple[torch.Tensor, ...]],
                                                                       DataLoader[tuple[torch.Tensor, ...]]]:
    """A synthetic set with signal: ``signal`` times the first 12 targets are added to the 12 inputs."""
    data = torch.Generator().manual_seed(123)
    images = torch.randn(n, 3, 2, 2, generator=data)
    target = (torch.rand(n, 21, generator=data) < 0.4).float()
    images += signal * target[:, :12].reshape(n, 3, 2, 2)
    split = 2 * n // 3
    train = DataLoader(TensorDataset(images[:split], target[:split]), batch_size=8, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    return train, DataLoader(TensorDataset(images[split:], target[split:]), batch_size=8)


def run(out: Path, epochs: int, loss: str = "hbce", resume: Path | None = None, lr: float = 1e-2,
        early_stopping: int = 5, monitor: str = "loss", model: nn.Module | None = None,
        n: int = 48, signal: float = 1.0) -> tuple[nn.Module, dict[str, object]]:
    model = model if model is not None else tiny_model()
    train, valid = loaders(n=n, signal=signal)
    config = TrainConfig(epochs=epochs, lr=lr, early_stopping=early_stopping, monitor=monitor, progress=False)
    result = fit(model, build_criterion(loss, HIERARCHY, 1.0), train, valid, HIERARCHY, config, out,
                 torch.device("cpu"), resume=resume, metadata={"config": {"loss": loss}})
    return model, result


def without_timing(history: object) -> list[dict[str, object]]:
    assert isinstance(history, list)
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_training_lowers_the_loss_changes_the_weights_and_beats_the_untrained_model(tmp_path: Path) -> None:
    """On data with signal, the training loss falls, every parameter moves, and validation AUROC rises."""
    model = tiny_model()
    initial = {name: value.detach().clone() for name, value in model.named_parameters()}
    _, valid = loaders(n=192, signal=3.0)
    untrained = evaluate(model, valid, HIERARCHY, torch.device("cpu")).scores
    _, result = run(tmp_path, epochs=5, loss="bce", model=model, n=192, signal=3.0)
    losses = [row["train_loss"] for row in without_timing(result["history"])]
    assert losses[-1] < losses[0] - 0.05, losses  # type: ignore[operator]
    for name, value in model.named_parameters():
        assert not torch.allclose(value, initial[name]), name
    trained = evaluate(model, valid, HIERARCHY, torch.device("cpu")).scores
    assert trained.weighted_auroc > untrained.weighted_auroc + 0.1, (untrained.weighted_auroc, trained.weighted_auroc)
    assert trained.loss is None and untrained.weighted_auroc < 0.65


def test_fit_writes_checkpoints_and_a_history(tmp_path: Path) -> None:
    """Each epoch is validated and logged; last.pt holds everything to resume; best_loss.pt / best_auroc.pt hold
    the epochs of the lowest validation loss and the highest validation (macro) AUROC."""
    model, result = run(tmp_path, epochs=3)
    history = without_timing(result["history"])
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(0.0 <= row["valid_macro_auroc"] <= 1.0 for row in history)  # type: ignore[operator]
    assert all(0.0 <= row["valid_violation_rate"] <= 1.0 for row in history)  # type: ignore[operator]
    last = load_checkpoint(tmp_path / LAST)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history", "config", "best", "best_epochs"} <= set(last)
    assert last["epoch"] == 3 and last["labels"] == HIERARCHY.labels
    losses = [row["valid_loss"] for row in history]
    aurocs = [row["valid_macro_auroc"] for row in history]
    best_loss, best_auroc = load_checkpoint(tmp_path / BEST["loss"]), load_checkpoint(tmp_path / BEST["auroc"])
    assert best_loss["epoch"] == 1 + losses.index(min(losses)) == result["best_epoch"]  # type: ignore[type-var]
    assert best_auroc["epoch"] == 1 + aurocs.index(max(aurocs))  # type: ignore[type-var]
    assert best_loss["value"] == min(losses) and best_loss["config"] == {"loss": "hbce"}  # type: ignore[type-var]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(last["model"][key], value)


def test_validation_loss_includes_the_hard_penalty(tmp_path: Path) -> None:
    """With hbce-hard the monitored validation loss is the full HBCE value, penalty included."""
    model, result = run(tmp_path, epochs=1, loss="hbce-hard", lr=0.0)
    _, valid = loaders()
    images, target = valid.dataset.tensors  # type: ignore[attr-defined]
    model.eval()
    with torch.no_grad():
        expected = build_criterion("hbce-hard", HIERARCHY, 1.0)(model(images), target)
        bce = build_criterion("bce", HIERARCHY)(model(images), target)
    (row,) = without_timing(result["history"])
    assert row["valid_loss"] == pytest.approx(float(expected), rel=1e-6)
    assert float(expected) > float(bce)  # the penalty counts


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """1 epoch + resume to 3 gives the weights and history of 3 epochs in one go (random state restored)."""
    straight, straight_result = run(tmp_path / "a", epochs=3)
    run(tmp_path / "b", epochs=1)
    resumed, resumed_result = run(tmp_path / "b", epochs=3, resume=tmp_path / "b" / LAST)
    assert without_timing(resumed_result["history"]) == without_timing(straight_result["history"])
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


def test_resume_refuses_a_checkpoint_with_other_labels(tmp_path: Path) -> None:
    """A checkpoint trained on other labels (e.g. without 'Uncertain') cannot be resumed."""
    run(tmp_path, epochs=1)
    state = load_checkpoint(tmp_path / LAST)
    state["labels"] = HIERARCHY.labels[:-1]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"the checkpoint's labels .* differ from this run's"):
        run(tmp_path, epochs=2, resume=tmp_path / "other.pt")


@pytest.mark.parametrize("monitor", ["loss", "auroc"])
def test_early_stopping_after_patience_epochs_without_improvement(tmp_path: Path, monitor: str) -> None:
    """With lr = 0 nothing improves after epoch 1, so patience 2 stops after epoch 3 (Keras's count)."""
    _, result = run(tmp_path, epochs=10, lr=0.0, early_stopping=2, monitor=monitor)
    assert result["stopped_early"] is True
    assert [row["epoch"] for row in without_timing(result["history"])] == [1, 2, 3]
    assert result["best_epoch"] == 1


def keras_reduce_on_plateau(values: list[float], lr: float, factor: float, patience: int, min_delta: float,
                            min_lr: float) -> list[float]:
    """Keras's ReduceLROnPlateau (mode 'min', cooldown 0), written out: the learning rate after each epoch."""
    best, wait, out = math.inf, 0, []
    for value in values:
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                if lr > min_lr:
                    lr = max(lr * factor, min_lr)
                wait = 0
        out.append(lr)
    return out


@pytest.mark.parametrize(("factor", "patience", "min_lr"), [(0.9, 1, 1e-8), (0.5, 2, 1e-8), (0.1, 1, 2e-6)])
def test_plateau_scheduler_follows_keras_rules(factor: float, patience: int, min_lr: float) -> None:
    """PyTorch's scheduler as configured reproduces Keras's patience count, absolute min_delta and min_lr."""
    values = [1.0, 0.9, 0.89995, 0.95, 0.8, 0.8, 0.8, 0.7999, 0.79995, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    config = TrainConfig(lr=1e-4, lr_factor=factor, lr_patience=patience, min_lr=min_lr)
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = plateau_scheduler(optimizer, config, "min")
    got = []
    for value in values:
        scheduler.step(value)
        got.append(optimizer.param_groups[0]["lr"])
    expected = keras_reduce_on_plateau(values, 1e-4, factor, patience, config.lr_min_delta, min_lr)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[-1] < 1e-4


def test_train_config_rejects_unknown_settings() -> None:
    """An unknown monitor or AUROC average, or a plateau patience below 1, raise ValueError naming it."""
    with pytest.raises(ValueError, match=r"monitor must be one of \('loss', 'auroc'\), got 'f1'"):
        TrainConfig(monitor="f1")
    with pytest.raises(ValueError, match=r"auroc_average must be .* got 'micro'"):
        TrainConfig(auroc_average="micro")
    with pytest.raises(ValueError, match=r"lr_patience must be >= 1, got 0"):
        TrainConfig(lr_patience=0)


def test_hard_mode_trains_exactly_like_bce(tmp_path: Path) -> None:
    """The paper's hard penalty has zero gradient: hbce-hard ends with BCE's weights, only the loss differs."""
    bce, bce_result = run(tmp_path / "bce", epochs=2, loss="bce")
    hard, hard_result = run(tmp_path / "hard", epochs=2, loss="hbce-hard")
    for key, value in bce.state_dict().items():
        torch.testing.assert_close(hard.state_dict()[key], value)
    bce_rows, hard_rows = without_timing(bce_result["history"]), without_timing(hard_result["history"])
    assert [r["valid_macro_auroc"] for r in bce_rows] == [r["valid_macro_auroc"] for r in hard_rows]
    assert all(h["train_loss"] >= b["train_loss"] for b, h in zip(bce_rows, hard_rows))  # type: ignore[operator]
