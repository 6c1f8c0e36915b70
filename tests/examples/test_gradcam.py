"""Tests for chexpert_example.gradcam: heatmaps against a hook-based reference, overlays and PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytestmark = pytest.mark.examples


def reference_cam(model: torch.nn.Module, image: torch.Tensor, label: int) -> torch.Tensor:
    """Grad-CAM the textbook way: a forward hook on the head, backward from one logit of the full forward."""
    captured = {}
    handle = model.head.register_forward_hook(lambda module, args, out: captured.update(maps=out))
    try:
        logits = model(image.unsqueeze(0))
        maps = captured["maps"]
        (grad,) = torch.autograd.grad(logits[0, label], maps)
    finally:
        handle.remove()
    cam = torch.relu((grad[0].mean(dim=(1, 2))[:, None, None] * maps[0]).sum(0))
    cam = F.interpolate(cam[None, None], size=image.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    return cam / cam.max() if cam.max() > 0 else cam


def test_grad_cam_matches_the_hook_reference_for_every_label() -> None:
    """Every label's heatmap equals the hook-based Grad-CAM; probabilities are the eval-mode sigmoids."""
    from chexpert_example.gradcam import grad_cam
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21).eval()
    image = torch.randn(3, 64, 64)
    heatmaps, probs = grad_cam(model, image)
    assert heatmaps.shape == (21, 64, 64)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    for label in range(21):
        torch.testing.assert_close(heatmaps[label], reference_cam(model, image, label), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.sigmoid(model(image.unsqueeze(0))[0]))
    with pytest.raises(ValueError, match=r"Expected `image` of shape \(3, H, W\), got \(1, 64, 64\)"):
        grad_cam(model, image[:1])


def test_overlay_blends_jet_colours_over_the_image() -> None:
    """Heat 0 tints toward dark blue, heat 1 toward dark red; alpha 0 leaves the gray image."""
    from chexpert_example.gradcam import overlay

    gray = np.full((2, 2), 100, dtype=np.uint8)
    heat = np.array([[0.0, 1.0], [0.5, 0.0]])
    out = np.asarray(overlay(gray, heat, alpha=1.0))
    assert tuple(out[0, 0]) == (0, 0, 128) and tuple(out[0, 1]) == (128, 0, 0)
    assert tuple(out[1, 0]) == (128, 255, 128)  # green at the middle
    assert (np.asarray(overlay(gray, heat, alpha=0.0)) == 100).all()
    with pytest.raises(ValueError, match=r"image \(2, 2\) and heatmap \(3, 3\) differ in shape"):
        overlay(gray, np.zeros((3, 3)))


def test_write_gradcam_pngs_writes_one_png_per_label(tmp_path: Path) -> None:
    """One RGB PNG of the input size per label, named after the label, in a folder named after the image."""
    from chexpert_example.gradcam import write_gradcam_pngs
    from chexpert_example.model import CheXpertDenseNet

    from hierloss.hierarchies import chexpert

    labels = chexpert(uncertain=False).labels
    model = CheXpertDenseNet(len(labels))
    written = write_gradcam_pngs(model, torch.randn(3, 64, 64), Image.new("L", (80, 70), 50), labels, tmp_path,
                                 "CheXpert-v1.0/test/patient1/study1/view1_frontal")
    folder = tmp_path / "CheXpert_v1_0_test_patient1_study1_view1_frontal"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name.replace(' ', '_')}.png" for name in labels)
    assert [label for label, _, _ in written] == list(labels)
    assert all(0 < prob < 1 for _, prob, _ in written)
    with Image.open(folder / "Pleural_Effusion.png") as png:
        assert png.size == (64, 64) and png.mode == "RGB"
    with pytest.raises(ValueError, match=r"the model has 20 outputs, got 21 label names"):
        write_gradcam_pngs(model, torch.randn(3, 64, 64), Image.new("L", (64, 64)), chexpert().labels, tmp_path, "x")
