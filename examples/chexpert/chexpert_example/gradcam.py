"""Grad-CAM (Selvaraju et al., 2017) at the reference's layer, and PNG overlays, one per label.

The reference (the-mercury/CIHMLC, ``src/helpers/cam.py``) explains the last ``Conv2D`` of the model — the head's
3×3 conv, whose output is taken after its ReLU and before the BatchNorm — with the gradients of the *sigmoid*
output of each label, averages them over the map to weigh its channels, keeps the positive part, divides by the
maximum, drops values at or below 0.5 and overlays the ``hot_r`` colour map at alpha 0.7. The sigmoid only
rescales a label's gradients by ``σ'(z) > 0``, which the division by the maximum removes, except where ``σ'(z)``
underflows: a saturated prediction (``|z|`` above about 17 in float32) gets an empty map with the probability,
not with the logit (``target='logit'``).
"""

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

__all__ = ["GRADCAM_TARGETS", "grad_cam", "overlay", "write_gradcam_pngs"]

#: ``--gradcam-target``: differentiate the sigmoid probability (the reference) or the logit.
GRADCAM_TARGETS: tuple[str, ...] = ("probability", "logit")


def grad_cam(model: CheXpertDenseNet, image: Tensor, target: str = "probability") -> tuple[Tensor, Tensor]:
    """Grad-CAM heatmaps of every label for one image, model in eval mode.

    For label ``c``: ``relu(Σ_k α_k A_k)`` with ``A`` the ``(512, h, w)`` map of :meth:`CheXpertDenseNet.
    feature_maps` and ``α_k`` the spatial mean of ``∂ y_c / ∂ A_k``, ``y_c`` the sigmoid output (or the logit);
    upsampled bilinearly to the input size and divided by its maximum (all zeros when the map is zero).

    Args:
        model: the trained model.
        image: ``(3, H, W)`` input, as the model's transform produces it.
        target: ``'probability'`` or ``'logit'``.

    Returns:
        ``(heatmaps (C, H, W) in [0, 1], probabilities (C,))`` on the CPU.

    Raises:
        ValueError: if ``image`` is not ``(3, H, W)``, or on an unknown ``target``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"Expected `image` of shape (3, H, W), got {tuple(image.shape)}")
    if target not in GRADCAM_TARGETS:
        raise ValueError(f"target must be one of {GRADCAM_TARGETS}, got {target!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.enable_grad():
            maps = model.feature_maps(image.unsqueeze(0).to(device)).detach().requires_grad_(True)
            logits = model.classify(maps)[0]
            outputs = torch.sigmoid(logits) if target == "probability" else logits
            cams = []
            for label in range(outputs.shape[0]):
                (grad,) = torch.autograd.grad(outputs[label], maps, retain_graph=label + 1 < outputs.shape[0])
                alpha = grad[0].mean(dim=(1, 2))
                cams.append(torch.relu(torch.einsum("k,khw->hw", alpha, maps[0].detach())))
        heat = F.interpolate(torch.stack(cams)[:, None], size=image.shape[1:], mode="bilinear",
                             align_corners=False)[:, 0]
        peak = heat.flatten(1).amax(1).clamp_min(torch.finfo(heat.dtype).tiny)[:, None, None]
        return (heat / peak).cpu(), torch.sigmoid(logits.detach()).cpu()
    finally:
        model.train(was_training)


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.7, clip: float = 0.5,
            cmap: str = "hot_r") -> Image.Image:
    """Blend a heatmap (values in ``[0, 1]``) in a matplotlib colour map over a grayscale image of the same size.

    As the reference: heat at or below ``clip`` is dropped, ``alpha · colour + image`` (both in ``[0, 1]``) is
    rescaled to the range 0–255.

    Raises:
        ValueError: if the shapes differ.
    """
    if gray.shape != heatmap.shape:
        raise ValueError(f"image {gray.shape} and heatmap {heatmap.shape} differ in shape")
    from matplotlib import colormaps

    heat = np.clip(heatmap, 0.0, 1.0)
    colour = colormaps[cmap](heat)[..., :3] * (heat > clip)[..., None]
    blended = alpha * colour + (gray.astype(np.float64) / 255.0)[..., None]
    low, high = blended.min(), blended.max()
    scaled = (blended - low) / (high - low) if high > low else np.zeros_like(blended)
    return Image.fromarray((scaled * 255).round().astype(np.uint8), mode="RGB")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def write_gradcam_pngs(model: CheXpertDenseNet, image: Tensor, gray: Image.Image, labels: Sequence[str],
                       out_dir: str | Path, name: str, target: str = "probability",
                       clip: float = 0.5) -> list[tuple[str, float, Path]]:
    """Write ``out_dir/<name>/<label>.png`` for every label: the heatmap over the (resized) image.

    Args:
        model: the trained model.
        image: the ``(3, H, W)`` model input.
        gray: the grayscale PIL image it came from (resized here to ``H × W``).
        labels: the label names, in output order.
        out_dir: the Grad-CAM folder (``OUT/gradcam``).
        name: the sub-folder for this image.
        target: differentiate the ``'probability'`` or the ``'logit'``.
        clip: heat at or below this is not drawn.

    Returns:
        ``[(label, probability, png path)]``.
    """
    heatmaps, probs = grad_cam(model, image, target)
    if heatmaps.shape[0] != len(labels):
        raise ValueError(f"the model has {heatmaps.shape[0]} outputs, got {len(labels)} label names")
    folder = Path(out_dir) / _slug(name)
    folder.mkdir(parents=True, exist_ok=True)
    size = (image.shape[2], image.shape[1])
    pixels = np.asarray(gray.convert("L").resize(size, Image.Resampling.BILINEAR))
    written = []
    for label, heatmap, prob in zip(labels, heatmaps.numpy(), probs.tolist()):
        path = folder / f"{_slug(label)}.png"
        overlay(pixels, heatmap, clip=clip).save(path)
        written.append((label, float(prob), path))
    return written
