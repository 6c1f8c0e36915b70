"""Monte Carlo dropout: ``N`` stochastic passes per image, the per-label mean and standard deviation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from chexpert_example.model import CheXpertDenseNet

__all__ = ["mc_dropout", "write_mc_dropout_csv"]


@torch.no_grad()
def mc_dropout(model: CheXpertDenseNet, loader: Iterable[tuple[Tensor, Tensor]], passes: int, device: torch.device,
               progress: bool = False, max_batches: int | None = None,
               postprocess: nn.Module | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and standard deviation of the sigmoid probabilities over ``passes`` dropout masks.

    BatchNorm stays in eval mode; only the dropout before the last layer samples (the paper's MC dropout).
    ``postprocess`` maps each pass's probabilities to predictions first (``MaxConstraint`` for ``mcloss``).

    Returns:
        ``(mean (N, C), std (N, C), targets (N, C))`` on the CPU; ``std`` is the population standard deviation
        over the passes (0 when ``passes == 1``).
    """
    means, stds, targets = [], [], []
    for i, (images, target) in enumerate(tqdm(loader, desc=f"MC dropout ×{passes}", leave=False,
                                               disable=not progress)):
        if max_batches is not None and i >= max_batches:
            break
        probs = torch.sigmoid(model.mc_dropout_logits(images.to(device), passes).float())
        if postprocess is not None:
            probs = postprocess(probs)
        means.append(probs.mean(0).cpu())
        stds.append(probs.std(0, correction=0).cpu())
        targets.append(target)
    return torch.cat(means), torch.cat(stds), torch.cat(targets)


def write_mc_dropout_csv(path: str | Path, images: Sequence[str], labels: Sequence[str], mean: Tensor,
                         std: Tensor) -> pd.DataFrame:
    """Write one row per (image, label): ``image, label, mean, std``; returns the frame written.

    Raises:
        ValueError: if the shapes of ``mean`` / ``std`` are not ``(len(images), len(labels))``.
    """
    expected = (len(images), len(labels))
    if tuple(mean.shape) != expected or tuple(std.shape) != expected:
        raise ValueError(f"Expected mean and std of shape {expected}, got {tuple(mean.shape)} and "
                         f"{tuple(std.shape)}")
    frame = pd.DataFrame({
        "image": [image for image in images for _ in labels],
        "label": list(labels) * len(images),
        "mean": mean.reshape(-1).double().numpy(),
        "std": std.reshape(-1).double().numpy(),
    })
    frame.to_csv(path, index=False)
    return frame
