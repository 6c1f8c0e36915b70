"""Tests for chexpert_example.train_loop with a tiny model (core environment: no torchvision)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from chexpert_example.criterion import build_criterion
from chexpert_example.train_loop import BEST, LAST, TrainConfig, fit, load_checkpoint, predict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hierloss.hierarchies import chexpert

HIERARCHY = chexpert()
TIMING = ("train_seconds", "train_images_per_second", "seconds")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 21))


def loaders(seed: int = 0) -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    data = torch.Generator().manual_seed(123)
    images = torch.randn(48, 3, 2, 2, generator=data)
    target = (torch.rand(48, 21, generator=data) < 0.4).float()
    images += target[:, :12].reshape(48, 3, 2, 2)  # learnable
    train = DataLoader(TensorDataset(images[:32], target[:32]), batch_size=8, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    return train, DataLoader(TensorDataset(images[32:], target[32:]), batch_size=8)


def run(out: Path, epochs: int, loss: str = "hbce", resume: Path | None = None, lr: float = 1e-2,
        early_stopping: int = 5) -> tuple[nn.Module, dict[str, object]]:
    model = tiny_model()
    train, valid = loaders()
    config = TrainConfig(epochs=epochs, lr=lr, early_stopping=early_stopping, progress=False)
    result = fit(model, build_criterion(loss, HIERARCHY, 1.0), train, valid, HIERARCHY, config, out,
                 torch.device("cpu"), resume=resume, metadata={"config": {"loss": loss}})
    return model, result


def without_timing(history: object) -> list[dict[str, object]]:
    assert isinstance(history, list)
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_fit_writes_checkpoints_and_a_history(tmp_path: Path) -> None:
    """Each epoch is validated and logged; last.pt holds everything to resume, best.pt the best model."""
    model, result = run(tmp_path, epochs=2)
    history = without_timing(result["history"])
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(0.0 <= row["valid_weighted_auroc"] <= 1.0 for row in history)  # type: ignore[operator]
    assert all(0.0 <= row["valid_violation_rate"] <= 1.0 for row in history)  # type: ignore[operator]
    last = load_checkpoint(tmp_path / LAST)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history", "config"} <= set(last)
    assert last["epoch"] == 2 and last["labels"] == HIERARCHY.labels
    best = load_checkpoint(tmp_path / BEST)
    assert best["epoch"] == result["best_epoch"] and best["config"] == {"loss": "hbce"}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(last["model"][key], value)


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


def test_early_stopping_stops_when_validation_auroc_stalls(tmp_path: Path) -> None:
    """With lr = 0 nothing improves after epoch 1, so patience 1 stops training after epoch 2."""
    _, result = run(tmp_path, epochs=10, lr=0.0, early_stopping=1)
    assert result["stopped_early"] is True
    assert [row["epoch"] for row in without_timing(result["history"])] == [1, 2]
    assert result["best_epoch"] == 1


def test_hard_mode_trains_exactly_like_bce(tmp_path: Path) -> None:
    """The paper's hard penalty has zero gradient: hbce-hard ends with BCE's weights, only the loss differs."""
    bce, bce_result = run(tmp_path / "bce", epochs=2, loss="bce")
    hard, hard_result = run(tmp_path / "hard", epochs=2, loss="hbce-hard")
    for key, value in bce.state_dict().items():
        torch.testing.assert_close(hard.state_dict()[key], value)
    bce_rows, hard_rows = without_timing(bce_result["history"]), without_timing(hard_result["history"])
    assert [r["valid_weighted_auroc"] for r in bce_rows] == [r["valid_weighted_auroc"] for r in hard_rows]
    assert all(h["train_loss"] >= b["train_loss"] for b, h in zip(bce_rows, hard_rows))  # type: ignore[operator]


def test_predict_applies_the_postprocess_to_probabilities() -> None:
    """predict returns σ(logits) (after ``postprocess``), the targets, and the mean loss over samples."""
    model = tiny_model().eval()
    _, valid = loaders()
    criterion = build_criterion("bce", HIERARCHY)
    probs, targets, loss = predict(model, valid, torch.device("cpu"), criterion=criterion)
    images, expected_targets = valid.dataset.tensors  # type: ignore[attr-defined]
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    torch.testing.assert_close(targets, expected_targets)
    assert loss == pytest.approx(float(criterion(logits, expected_targets)), rel=1e-5)
    capped, _, _ = predict(model, valid, torch.device("cpu"), postprocess=nn.Hardtanh(0.0, 0.5))
    torch.testing.assert_close(capped, torch.sigmoid(logits).clamp(max=0.5))
