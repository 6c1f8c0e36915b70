"""Monte Carlo dropout: ``N`` stochastic passes per image, the per-label mean and standard deviation.

The reference (the-mercury/CIHMLC, ``src/x_ray_inference.py``) runs ``model(image, training=True)`` 10 times on
a model loaded by ``ModelUtils.load_model``, which sets ``model.trainable = False``; a Keras BatchNormalization
layer that is not trainable normalises with its moving statistics even when called with ``training=True``
(``keras.layers.BatchNormalization.call``: ``if training and self.trainable``), while Dropout samples. So the
reference's passes differ in their dropout masks only: ``batchnorm='inference'``, the default here.
``batchnorm='training'`` also lets BatchNorm use each batch's statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from chexpert_example.evaluation import GatheredRows, split_batch
from chexpert_example.model import CheXpertDenseNet

__all__ = ["MonteCarlo", "mc_dropout", "write_mc_dropout_csv"]


@dataclass(frozen=True)
class MonteCarlo:
    """The outcome of :func:`mc_dropout`, rows in dataset order (CPU tensors): ``mean``, ``std`` and ``targets``
    ``(N, C)``, ``index`` ``(N,)``."""

    mean: Tensor
    std: Tensor
    targets: Tensor
    index: Tensor


@torch.no_grad()
def mc_dropout(model: CheXpertDenseNet, loader: Iterable[Sequence[Any]], passes: int, device: torch.device,
               batchnorm: str = "inference", progress: bool = False, max_batches: int | None = None,
               postprocess: nn.Module | None = None) -> MonteCarlo:
    """Mean and standard deviation of the sigmoid probabilities over ``passes`` stochastic passes.

    In a ``torchrun`` job each process runs its shard and the rows are gathered to every process.
    ``postprocess`` maps each pass's probabilities to predictions first (``MaxConstraint`` for ``mcloss``).

    Args:
        model: the trained model.
        loader: batches of ``(images, targets, indices)`` (or ``(images, targets)`` in one process).
        passes: the number of passes (the reference: 10).
        device: where to run.
        batchnorm: ``'inference'`` (the reference's behaviour, see the module) or ``'training'``
            (:meth:`CheXpertDenseNet.mc_dropout_logits`).
        progress: show a progress bar.
        max_batches: stop after this many batches.
        postprocess: maps probabilities to predictions.

    Returns:
        The :class:`MonteCarlo` rows; ``std`` is the population standard deviation over the passes (0 when
        ``passes == 1``).
    """
    rows = GatheredRows(("mean", "std")).to(device)
    seen = 0
    for step, batch in enumerate(tqdm(loader, desc=f"MC dropout ×{passes}", leave=False, disable=not progress)):
        if max_batches is not None and step >= max_batches:
            break
        images, target, index = split_batch(batch, seen)
        seen += len(target)
        probs = torch.sigmoid(model.mc_dropout_logits(images.to(device), passes, batchnorm).float())
        if postprocess is not None:
            probs = postprocess(probs)
        rows.update(index.to(device), target.to(device), mean=probs.mean(0), std=probs.std(0, correction=0))
    out = rows.compute()
    return MonteCarlo(out["mean"].float().cpu(), out["std"].float().cpu(), out["target"].float().cpu(),
                      out["index"].cpu())


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
