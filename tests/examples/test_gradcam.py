"""Tests for chexpert_example.gradcam: heatmaps against a hook-based reference, overlays and PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytestmark = pytest.mark.examples


def reference_cams(model: torch.nn.Module, image: torch.Tensor, labels: list[int], target: str) -> torch.Tensor:
    """Grad-CAM the textbook way: a forward hook on the head conv's ReLU (the reference's last Conv2D output,
    before BatchNorm), backward from each label's sigmoid output (or logit) of one full forward."""
    captured = {}
    handle = model.conv_relu.register_forward_hook(lambda module, args, out: captured.update(maps=out))
    try:
        logits = model(image.unsqueeze(0))
    finally:
        handle.remove()
    maps = captured["maps"]
    cams = []
    for label in labels:
        output = torch.sigmoid(logits[0, label]) if target == "probability" else logits[0, label]
        (grad,) = torch.autograd.grad(output, maps, retain_graph=True)
        cam = torch.relu((grad[0].mean(dim=(1, 2))[:, None, None] * maps[0]).sum(0))
        cam = F.interpolate(cam[None, None], size=image.shape[1:], mode="bilinear", align_corners=False)[0, 0]
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    return torch.stack(cams).detach()


@pytest.mark.parametrize("target", ["probability", "logit"])
def test_grad_cam_matches_the_hook_reference_for_every_label(target: str) -> None:
    """Heatmaps equal the hook-based Grad-CAM (four labels checked); probabilities are the eval-mode sigmoids."""
    from chexpert_example.gradcam import grad_cam
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21, init="torch").eval()
    image = torch.randn(3, 64, 64)
    heatmaps, probs = grad_cam(model, image, target)
    assert heatmaps.shape == (21, 64, 64)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    labels = [0, 7, 14, 20]
    torch.testing.assert_close(heatmaps[labels], reference_cams(model, image, labels, target), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.sigmoid(model(image.unsqueeze(0))[0]))
    with pytest.raises(ValueError, match=r"Expected `image` of shape \(3, H, W\), got \(1, 64, 64\)"):
        grad_cam(model, image[:1])
    with pytest.raises(ValueError, match=r"target must be one of \('probability', 'logit'\), got 'loss'"):
        grad_cam(model, image, "loss")


def test_probability_and_logit_targets_differ_only_where_the_sigmoid_saturates() -> None:
    """σ' > 0 rescales every channel weight alike, which the normalisation removes: the two targets give the same
    heatmaps, except for a saturated output, whose probability gradient underflows to an empty map."""
    from chexpert_example.gradcam import grad_cam
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21, init="torch").eval()
    with torch.no_grad():
        model.classifier[3].bias[0] = 60.0  # σ = 1 exactly in float32
    image = torch.randn(3, 64, 64)
    by_probability, _ = grad_cam(model, image, "probability")
    by_logit, _ = grad_cam(model, image, "logit")
    torch.testing.assert_close(by_probability[1:], by_logit[1:], atol=1e-5, rtol=1e-4)
    assert not by_probability[0].any() and by_logit[0].max() == 1.0


def test_overlay_blends_the_colour_map_above_the_clip_and_rescales() -> None:
    """Heat above ``clip`` adds alpha × hot_r colour to the image, heat at or below it adds nothing, and the sum is
    rescaled to 0–255."""
    from chexpert_example.gradcam import overlay
    from matplotlib import colormaps

    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    heat = np.array([[0.2, 1.0], [0.5, 0.9]])
    out = np.asarray(overlay(gray, heat, alpha=0.7, clip=0.5)).astype(np.float64)
    colour = colormaps["hot_r"](heat)[..., :3] * (heat > 0.5)[..., None]
    blended = 0.7 * colour + (gray / 255.0)[..., None]
    expected = np.round((blended - blended.min()) / (blended.max() - blended.min()) * 255)
    np.testing.assert_array_equal(out, expected)
    assert (out[0, 0] == 0).all()  # dark pixel, heat dropped
    plain = np.asarray(overlay(gray, heat, alpha=0.0))
    assert (plain[..., 0] == gray).all()
    with pytest.raises(ValueError, match=r"image \(2, 2\) and heatmap \(3, 3\) differ in shape"):
        overlay(gray, np.zeros((3, 3)))


def test_write_gradcam_pngs_writes_one_png_per_label(tmp_path: Path) -> None:
    """One RGB PNG of the input size per label, named after the label, in a folder named after the image."""
    from chexpert_example.gradcam import write_gradcam_pngs
    from chexpert_example.model import CheXpertDenseNet

    from hierloss.datasets import chexpert_hierarchy

    labels = chexpert_hierarchy(uncertain_label=False).labels
    model = CheXpertDenseNet(len(labels))
    written = write_gradcam_pngs(model, torch.randn(3, 64, 64), Image.new("L", (80, 70), 50), labels, tmp_path,
                                 "CheXpert-v1.0/test/patient1/study1/view1_frontal", target="logit", clip=0.0)
    folder = tmp_path / "CheXpert_v1_0_test_patient1_study1_view1_frontal"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name.replace(' ', '_')}.png" for name in labels)
    assert [label for label, _, _ in written] == list(labels)
    assert all(0 < prob < 1 for _, prob, _ in written)
    with Image.open(folder / "Pleural_Effusion.png") as png:
        assert png.size == (64, 64) and png.mode == "RGB"
    with pytest.raises(ValueError, match=r"the model has 20 outputs, got 21 label names"):
        write_gradcam_pngs(model, torch.randn(3, 64, 64), Image.new("L", (64, 64)), chexpert_hierarchy().labels,
                           tmp_path, "x")
