"""Tests for chexpert_example.model: DenseNet121 plus the reference's head, initialisation, BatchNorm, weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.examples


@pytest.mark.parametrize("num_labels", [21, 20])
def test_model_is_densenet121_with_the_reference_head(num_labels: int) -> None:
    """DenseNet121 features, ReLU, Conv 3×3 512 (bias) + ReLU, BatchNorm, GAP, Dense 128 ReLU, Dropout 0.5, C."""
    from chexpert_example.model import CheXpertDenseNet
    from torchvision.models import densenet121

    model = CheXpertDenseNet(num_labels)
    reference = densenet121(weights=None).features
    assert [type(m) for m in model.features.modules()] == [type(m) for m in reference.modules()]
    assert sum(p.numel() for p in model.features.parameters()) == sum(p.numel() for p in reference.parameters())
    assert [name for name, _ in model.named_children()] == ["features", "features_relu", "conv", "conv_relu", "norm",
                                                             "pool", "classifier"]
    assert isinstance(model.features_relu, nn.ReLU) and isinstance(model.conv_relu, nn.ReLU)
    conv = model.conv
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (1024, 512, (3, 3), (1, 1))
    assert conv.bias is not None
    assert isinstance(model.norm, nn.BatchNorm2d) and model.norm.num_features == 512
    layers = list(model.classifier)
    assert isinstance(layers[0], nn.Linear) and (layers[0].in_features, layers[0].out_features) == (512, 128)
    assert isinstance(layers[1], nn.ReLU)
    assert isinstance(layers[2], nn.Dropout) and layers[2].p == 0.5
    assert isinstance(layers[3], nn.Linear) and (layers[3].in_features, layers[3].out_features) == (128, num_labels)
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        x = model.conv_relu(model.conv(torch.relu(model.features(images))))
        expected = model.classifier(model.norm(x).mean(dim=(2, 3)))
        torch.testing.assert_close(model(images), expected)
    assert expected.shape == (2, num_labels)


def test_keras_initialisation_and_batchnorm() -> None:
    """init='keras': Glorot-uniform kernels within ±sqrt(6 / (fan_in + fan_out)), zero biases; batchnorm='keras':
    momentum 0.01, ε 1.001e-5 in DenseNet121 and 1e-3 in the head; the 'torch' choices keep PyTorch's."""
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21)
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            weight = layer.weight
            receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
            bound = math.sqrt(6 / ((weight.shape[0] + weight.shape[1]) * receptive))
            assert weight.abs().max() <= bound, name
            assert weight.std() > 0.4 * bound, name  # uniform on ±bound has std bound / √3
            assert layer.bias is None or not layer.bias.any(), name
        if isinstance(layer, nn.BatchNorm2d):
            assert layer.momentum == 0.01, name
            assert layer.eps == (1e-3 if name == "norm" else 1.001e-5), name
    torch.manual_seed(0)
    plain = CheXpertDenseNet(21, init="torch", batchnorm="torch")
    assert plain.norm.momentum == 0.1 and plain.norm.eps == 1e-5
    assert plain.classifier[0].bias.any()  # PyTorch's default initialises biases
    with pytest.raises(ValueError, match=r"init must be one of \('keras', 'torch'\), got 'he'"):
        CheXpertDenseNet(21, init="he")
    with pytest.raises(ValueError, match=r"batchnorm must be one of \('keras', 'torch'\), got 'sync'"):
        CheXpertDenseNet(21, batchnorm="sync")


def old_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names as in torchvision's published densenet121-a639ec97.pth: 'denselayer1.norm.1.weight'."""
    out = {}
    for key, value in state.items():
        for part in ("norm", "relu", "conv"):
            for index in ("1", "2"):
                key = key.replace(f".{part}{index}.", f".{part}.{index}.")
        out[key] = value
    return out


def test_weights_load_a_local_densenet121_state_dict(tmp_path: Path) -> None:
    """--weights loads torchvision's densenet121 state dicts (new and old names, wrapped, 'module.' prefixed,
    features only) into the features; the head keeps its initialisation."""
    from chexpert_example.model import CheXpertDenseNet
    from torchvision.models import densenet121

    torch.manual_seed(1)
    source = densenet121(weights=None).state_dict()
    variants = {
        "new.pth": source,
        "old.pth": old_style(source),
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in source.items()}},
        "features.pth": {k.removeprefix("features."): v for k, v in source.items() if k.startswith("features.")},
    }
    for name, state in variants.items():
        torch.save(state, tmp_path / name)
        torch.manual_seed(2)
        model = CheXpertDenseNet(21, weights=tmp_path / name)
        loaded = model.features.state_dict()
        assert all(torch.equal(value, source[f"features.{key}"]) for key, value in loaded.items()), name
    assert not model.classifier[0].bias.any() and not model.conv.bias.any()  # the head: Keras's initialisation


def test_weights_errors_name_the_file_and_the_entry(tmp_path: Path) -> None:
    """A missing file, a file without a state dict, missing / unexpected / misshapen entries are named."""
    from chexpert_example.model import CheXpertDenseNet
    from torchvision.models import densenet121

    with pytest.raises(FileNotFoundError, match=r"--weights .*none.pth: no such file"):
        CheXpertDenseNet(21, weights=tmp_path / "none.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(TypeError, match=r"list.pth: expected a DenseNet121 state dict .*got list"):
        CheXpertDenseNet(21, weights=tmp_path / "list.pth")
    state = densenet121(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if k != "features.norm5.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing.pth: not a DenseNet121 state dict: 1 missing .*'norm5.weight'"):
        CheXpertDenseNet(21, weights=tmp_path / "missing.pth")
    torch.save({**state, "features.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"1 unexpected \(the first: 'extra.weight'\)"):
        CheXpertDenseNet(21, weights=tmp_path / "extra.pth")
    torch.save({**state, "features.conv0.weight": torch.zeros(64, 1, 7, 7)}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"'conv0.weight' has shape \(64, 1, 7, 7\), DenseNet121's is \(64, 3, 7, 7\)"):
        CheXpertDenseNet(21, weights=tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"give pretrained=True or weights, not both"):
        CheXpertDenseNet(21, pretrained=True, weights=tmp_path / "extra.pth")


def test_mc_dropout_inference_equals_full_passes_with_only_dropout_active() -> None:
    """batchnorm='inference': N classifier passes on shared features equal N full forwards with BatchNorm in eval
    and dropout on; BatchNorm statistics and the model's mode are left as they were."""
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21)
    images = torch.randn(2, 3, 32, 32)
    running_mean = model.norm.running_mean.clone()
    torch.manual_seed(7)
    fast = model.mc_dropout_logits(images, 3)
    assert model.training
    model.eval()
    model.classifier[2].train()
    torch.manual_seed(7)
    with torch.no_grad():
        slow = torch.stack([model(images) for _ in range(3)])
    torch.testing.assert_close(fast, slow)
    assert fast.shape == (3, 2, 21)
    assert not torch.allclose(fast[0], fast[1])  # dropout samples
    torch.testing.assert_close(model.norm.running_mean, running_mean)
    with pytest.raises(ValueError, match=r"passes must be >= 1, got 0"):
        model.mc_dropout_logits(images, 0)
    with pytest.raises(ValueError, match=r"batchnorm must be one of \('inference', 'training'\), got 'eval'"):
        model.mc_dropout_logits(images, 2, batchnorm="eval")


def test_mc_dropout_training_uses_batch_statistics_and_restores_the_buffers() -> None:
    """batchnorm='training': each pass is a full forward in training mode; running statistics are restored."""
    from chexpert_example.model import CheXpertDenseNet

    torch.manual_seed(0)
    model = CheXpertDenseNet(21).eval()
    images = torch.randn(2, 3, 32, 32)
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    torch.manual_seed(3)
    got = model.mc_dropout_logits(images, 2, batchnorm="training")
    assert not model.training
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        expected = torch.stack([model(images) for _ in range(2)])
    torch.testing.assert_close(got, expected)
    torch.manual_seed(3)
    assert not torch.allclose(got, model.mc_dropout_logits(images, 2, batchnorm="inference"), atol=1e-3)
