"""Tests for chexpert_example.inference: Monte Carlo dropout and its CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytestmark = pytest.mark.examples


def test_mc_dropout_is_the_mean_and_std_of_the_passes() -> None:
    """Mean and (population) std over passes equal those of mc_dropout_logits' sigmoids, batch by batch, for
    both BatchNorm modes; rows come back in dataset order."""
    from chexpert_example.inference import mc_dropout
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21)
    images, target = torch.randn(4, 3, 32, 32), torch.randint(0, 2, (4, 21)).float()
    loader = list(DataLoader(TensorDataset(images, target), batch_size=2))  # batches: no RNG drawn by iterating
    for batchnorm in ("inference", "training"):
        torch.manual_seed(1)
        result = mc_dropout(model, loader, 3, torch.device("cpu"), batchnorm)
        torch.manual_seed(1)
        probs = torch.cat([torch.sigmoid(model.mc_dropout_logits(batch, 3, batchnorm)) for batch, _ in loader], dim=1)
        torch.testing.assert_close(result.mean, probs.mean(0))
        torch.testing.assert_close(result.std, probs.std(0, correction=0))
        torch.testing.assert_close(result.targets, target)
        assert result.index.tolist() == [0, 1, 2, 3]
        assert (result.std > 0).all()
    one_pass = mc_dropout(model, loader, 1, torch.device("cpu"))
    assert torch.equal(one_pass.std, torch.zeros(4, 21))
    torch.manual_seed(1)
    probs = torch.cat([torch.sigmoid(model.mc_dropout_logits(batch, 3)) for batch, _ in loader], dim=1)
    torch.manual_seed(1)
    capped = mc_dropout(model, loader, 3, torch.device("cpu"), postprocess=torch.nn.Hardtanh(0.0, 0.5))
    torch.testing.assert_close(capped.mean, probs.clamp(max=0.5).mean(0))


def test_write_mc_dropout_csv_one_row_per_image_and_label(tmp_path: Path) -> None:
    """The CSV has image, label, mean, std for every (image, label) pair, values as given."""
    from chexpert_example.inference import write_mc_dropout_csv

    mean, std = torch.rand(2, 3), torch.rand(2, 3)
    write_mc_dropout_csv(tmp_path / "mc.csv", ["a.jpg", "b.jpg"], ["x", "y", "z"], mean, std)
    frame = pd.read_csv(tmp_path / "mc.csv")
    assert list(frame.columns) == ["image", "label", "mean", "std"] and len(frame) == 6
    row = frame[(frame["image"] == "b.jpg") & (frame["label"] == "y")].iloc[0]
    assert row["mean"] == pytest.approx(float(mean[1, 1])) and row["std"] == pytest.approx(float(std[1, 1]))
    with pytest.raises(ValueError, match=r"Expected mean and std of shape \(2, 2\), got \(2, 3\)"):
        write_mc_dropout_csv(tmp_path / "bad.csv", ["a.jpg", "b.jpg"], ["x", "y"], mean, std)
