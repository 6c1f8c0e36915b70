"""Grad-CAM (Selvaraju et al., 2017) on the head's 512-channel map, and PNG overlays, one per label."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from chexpert_example.model import CheXpertDenseNet

__all__ = ["grad_cam", "overlay", "write_gradcam_pngs"]


def grad_cam(model: CheXpertDenseNet, image: Tensor) -> tuple[Tensor, Tensor]:
    """Grad-CAM heatmaps of every label for one image, model in eval mode.

    For label ``c``: ``relu(Σ_k α_k A_k)`` with ``A`` the ``(512, h, w)`` map of :meth:`CheXpertDenseNet.
    feature_maps` and ``α_k`` the spatial mean of ``∂ logit_c / ∂ A_k``; upsampled bilinearly to the input size
    and scaled to ``[0, 1]`` per label (all zeros when the map is zero everywhere).

    Args:
        model: the trained model.
        image: ``(3, H, W)`` input, as the model's transform produces it.

    Returns:
        ``(heatmaps (C, H, W) in [0, 1], probabilities (C,))`` on the CPU.

    Raises:
        ValueError: if ``image`` is not ``(3, H, W)``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"Expected `image` of shape (3, H, W), got {tuple(image.shape)}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.enable_grad():
            maps = model.feature_maps(image.unsqueeze(0).to(device)).detach().requires_grad_(True)
            logits = model.classify(maps)[0]
            cams = []
            for label in range(logits.shape[0]):
                (grad,) = torch.autograd.grad(logits[label], maps, retain_graph=label + 1 < logits.shape[0])
                alpha = grad[0].mean(dim=(1, 2))
                cams.append(torch.relu(torch.einsum("k,khw->hw", alpha, maps[0].detach())))
        heat = F.interpolate(torch.stack(cams)[:, None], size=image.shape[1:], mode="bilinear",
                             align_corners=False)[:, 0]
        peak = heat.flatten(1).amax(1).clamp_min(torch.finfo(heat.dtype).tiny)[:, None, None]
        return (heat / peak).cpu(), torch.sigmoid(logits.detach()).cpu()
    finally:
        model.train(was_training)


def _jet(values: np.ndarray) -> np.ndarray:
    """The 'jet' colour map (blue → cyan → yellow → red) of values in ``[0, 1]``, as ``(..., 3)`` floats."""
    four = 4.0 * values[..., None]
    offsets = np.array([3.0, 2.0, 1.0])  # red, green, blue
    return np.clip(1.5 - np.abs(four - offsets), 0.0, 1.0)


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """Blend a heatmap (values in ``[0, 1]``) in the jet colours over a grayscale image of the same size.

    Raises:
        ValueError: if the shapes differ.
    """
    if gray.shape != heatmap.shape:
        raise ValueError(f"image {gray.shape} and heatmap {heatmap.shape} differ in shape")
    base = np.repeat((gray.astype(np.float64) / 255.0)[..., None], 3, axis=2)
    blended = (1 - alpha) * base + alpha * _jet(np.clip(heatmap, 0.0, 1.0))
    return Image.fromarray((blended * 255).round().astype(np.uint8), mode="RGB")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def write_gradcam_pngs(model: CheXpertDenseNet, image: Tensor, gray: Image.Image, labels: Sequence[str],
                       out_dir: str | Path, name: str) -> list[tuple[str, float, Path]]:
    """Write ``out_dir/<name>/<label>.png`` for every label: the heatmap over the (resized) image.

    Args:
        model: the trained model.
        image: the ``(3, H, W)`` model input.
        gray: the grayscale PIL image it came from (resized here to ``H × W``).
        labels: the label names, in output order.
        out_dir: the Grad-CAM folder (``OUT/gradcam``).
        name: the sub-folder for this image.

    Returns:
        ``[(label, probability, png path)]``.
    """
    heatmaps, probs = grad_cam(model, image)
    if heatmaps.shape[0] != len(labels):
        raise ValueError(f"the model has {heatmaps.shape[0]} outputs, got {len(labels)} label names")
    folder = Path(out_dir) / _slug(name)
    folder.mkdir(parents=True, exist_ok=True)
    size = (image.shape[2], image.shape[1])
    pixels = np.asarray(gray.convert("L").resize(size, Image.Resampling.BILINEAR))
    written = []
    for label, heatmap, prob in zip(labels, heatmaps.numpy(), probs.tolist()):
        path = folder / f"{_slug(label)}.png"
        overlay(pixels, heatmap).save(path)
        written.append((label, float(prob), path))
    return written
