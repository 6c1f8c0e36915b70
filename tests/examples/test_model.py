"""Tests for chexpert_example.model: DenseNet121 features plus the paper's head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.examples


@pytest.mark.parametrize("num_labels", [21, 20])
def test_model_is_densenet121_with_the_paper_head(num_labels: int) -> None:
    """DenseNet121 features, Conv2d 512 + BatchNorm, GAP, Linear 128 + ReLU, Dropout 0.5, Linear C."""
    from chexpert_example.model import CheXpertDenseNet
    from torchvision.models import densenet121

    model = CheXpertDenseNet(num_labels)
    reference = densenet121(weights=None).features
    assert [type(m) for m in model.features.modules()] == [type(m) for m in reference.modules()]
    assert sum(p.numel() for p in model.features.parameters()) == sum(p.numel() for p in reference.parameters())
    conv = [m for m in model.head if isinstance(m, nn.Conv2d)]
    norm = [m for m in model.head if isinstance(m, nn.BatchNorm2d)]
    assert len(conv) == 1 and conv[0].in_channels == 1024 and conv[0].out_channels == 512
    assert len(norm) == 1 and norm[0].num_features == 512
    layers = list(model.classifier)
    assert isinstance(layers[0], nn.Linear) and (layers[0].in_features, layers[0].out_features) == (512, 128)
    assert isinstance(layers[1], nn.ReLU)
    assert isinstance(layers[2], nn.Dropout) and layers[2].p == 0.5
    assert isinstance(layers[3], nn.Linear) and (layers[3].in_features, layers[3].out_features) == (128, num_labels)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, num_labels)


def test_mc_dropout_logits_equal_full_passes_with_only_dropout_active() -> None:
    """N classifier passes on shared features equal N full forwards with BatchNorm in eval, dropout on."""
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21)
    images = torch.randn(3, 3, 64, 64)
    running_mean = model.head[2].running_mean.clone()
    torch.manual_seed(7)
    fast = model.mc_dropout_logits(images, 4)
    assert model.training  # the mode is restored
    model.eval()
    model.classifier[2].train()
    torch.manual_seed(7)
    with torch.no_grad():
        embedding = model.embed(images)
        slow = torch.stack([model.classifier(embedding) for _ in range(4)])
        full = model(images)
    torch.testing.assert_close(fast, slow)
    assert fast.shape == (4, 3, 21)
    assert not torch.allclose(fast[0], fast[1])  # dropout samples
    torch.testing.assert_close(fast.mean(0), full, atol=1.0, rtol=0)  # around the same logits
    torch.testing.assert_close(model.head[2].running_mean, running_mean)  # BatchNorm statistics untouched
    with pytest.raises(ValueError, match=r"passes must be >= 1, got 0"):
        model.mc_dropout_logits(images, 0)
