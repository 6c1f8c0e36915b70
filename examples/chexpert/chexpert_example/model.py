"""DenseNet121 plus the reference's head, Keras-style initialisation and BatchNorm, and loading local weights.

The reference model (the-mercury/CIHMLC, ``src/helpers/model_builder.py``): Keras's ``DenseNet121(include_top=
False)``, whose output ends with BatchNorm and ReLU, then ``Conv2D(512, 3×3, padding='same', activation='relu')``
→ ``BatchNormalization`` → ``GlobalAveragePooling2D`` → ``Dense(128, relu)`` → ``Dropout(0.5)`` →
``Dense(C, sigmoid)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import DenseNet121_Weights, densenet121

__all__ = ["BATCHNORMS", "INITS", "MC_BATCHNORM", "CheXpertDenseNet", "keras_init", "load_backbone_weights"]

#: ``--init``: Keras's defaults (Glorot-uniform kernels, zero biases; the reference) or PyTorch's.
INITS: tuple[str, ...] = ("keras", "torch")
#: ``--batchnorm``: Keras's settings (momentum 0.99, i.e. PyTorch's 0.01; ε 1.001e-5 in DenseNet121, 1e-3 in
#: the head; the reference) or PyTorch's (momentum 0.1, ε 1e-5).
BATCHNORMS: tuple[str, ...] = ("keras", "torch")
#: ``--mc-dropout-batchnorm``: BatchNorm during Monte Carlo dropout passes, running statistics or batch ones.
MC_BATCHNORM: tuple[str, ...] = ("inference", "training")
_KERAS_DENSENET_EPS = 1.001e-5
_KERAS_HEAD_EPS = 1e-3
_KERAS_MOMENTUM = 0.01
# Old torchvision checkpoints name 'denselayer1.norm.1.weight' what the model calls 'denselayer1.norm1.weight'.
_OLD_DENSELAYER_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def keras_init(module: nn.Module) -> None:
    """Keras's default initialisation: Glorot-uniform weights for every Conv2d and Linear, zero biases,
    BatchNorm γ = 1, β = 0 and fresh running statistics."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            layer.reset_parameters()


def _set_batchnorm(module: nn.Module, momentum: float, eps: float) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.momentum, layer.eps = momentum, eps


def _state_dict_in(obj: Any, path: str) -> Mapping[str, Tensor]:
    """The state dict in a loaded file: the object itself, or its ``'state_dict'`` / ``'model'`` entry."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise TypeError(f"--weights {path}: expected a DenseNet121 state dict (names to tensors), got "
                        f"{type(obj).__name__}")
    return obj


def load_backbone_weights(features: nn.Module, path: str | os.PathLike[str]) -> int:
    """Load a local DenseNet121 state dict into ``features`` (torchvision's ``densenet121().features``).

    Accepts torchvision's ``densenet121`` checkpoints (``features.*`` and ``classifier.*`` names, new or old
    style, as ``densenet121-a639ec97.pth``), a bare ``features`` state dict, or either wrapped in a dict under
    ``'state_dict'`` / ``'model'``; ``module.`` prefixes (DataParallel) are dropped. Non-``features`` entries
    (the ImageNet classifier) are ignored.

    Returns:
        The number of tensors loaded.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        TypeError: if the file holds no state dict.
        ValueError: naming missing, unexpected or wrongly shaped entries.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"--weights {name}: no such file")
    raw = _state_dict_in(torch.load(name, map_location="cpu", weights_only=True), name)
    renamed = {_OLD_DENSELAYER_KEY.sub(r"\1\2.", key.removeprefix("module.")): value for key, value in raw.items()}
    if any(key.startswith("features.") for key in renamed):
        renamed = {key.removeprefix("features."): value for key, value in renamed.items()
                   if key.startswith("features.")}
    expected = features.state_dict()
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing (the first: {missing[0]!r})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (the first: {unexpected[0]!r})"] if unexpected else []
        raise ValueError(f"--weights {name}: not a DenseNet121 state dict: {', '.join(parts)}")
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"--weights {name}: {key!r} has shape {tuple(value.shape)}, DenseNet121's is "
                             f"{tuple(expected[key].shape)}")
    features.load_state_dict(renamed)
    return len(renamed)


class CheXpertDenseNet(nn.Module):
    """The reference model; ``forward`` returns logits ``(N, C)`` (the sigmoid is in the loss / at inference).

    ``features`` (torchvision's DenseNet121 features, ending with BatchNorm) → ``features_relu`` (the ReLU that
    ends Keras's ``DenseNet121(include_top=False)``) → ``conv`` (Conv2d 1024 → 512, 3×3, padding 1, bias) →
    ``conv_relu``: the map Grad-CAM explains (the reference's last Conv2D output) → ``norm`` (BatchNorm 512) →
    global average pooling → ``classifier``: Linear 512 → 128, ReLU, Dropout, Linear 128 → C.

    Args:
        num_labels: ``C`` (21 with 'Uncertain', 20 without).
        dropout: dropout probability before the last layer (the reference: 0.5; also Monte Carlo dropout's).
        init: ``'keras'`` (Glorot-uniform, zero biases: the reference) or ``'torch'`` (torchvision's DenseNet
            initialisation and PyTorch's layer defaults).
        batchnorm: ``'keras'`` (momentum 0.01 in PyTorch's convention, ε 1.001e-5 / 1e-3: the reference) or
            ``'torch'`` (momentum 0.1, ε 1e-5).
        pretrained: start ``features`` from torchvision's ImageNet weights (downloads them unless cached).
        weights: start ``features`` from this local DenseNet121 state dict (:func:`load_backbone_weights`).

    Shape:
        input ``(N, 3, H, W)``, output ``(N, C)``.

    Raises:
        ValueError: on an unknown ``init`` / ``batchnorm``, or both ``pretrained`` and ``weights``.
    """

    def __init__(self, num_labels: int, dropout: float = 0.5, init: str = "keras", batchnorm: str = "keras",
                 pretrained: bool = False, weights: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if batchnorm not in BATCHNORMS:
            raise ValueError(f"batchnorm must be one of {BATCHNORMS}, got {batchnorm!r}")
        if pretrained and weights is not None:
            raise ValueError("give pretrained=True or weights, not both")
        self.features = densenet121(weights=DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None).features
        self.features_relu = nn.ReLU()
        self.conv = nn.Conv2d(1024, 512, kernel_size=3, padding=1)
        self.conv_relu = nn.ReLU()
        self.norm = nn.BatchNorm2d(512)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(512, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_labels),
        )
        if init == "keras":
            for part in ([] if pretrained or weights is not None else [self.features]) + [self.conv, self.norm,
                                                                                            self.classifier]:
                keras_init(part)
        if weights is not None:
            load_backbone_weights(self.features, weights)
        if batchnorm == "keras":
            _set_batchnorm(self.features, _KERAS_MOMENTUM, _KERAS_DENSENET_EPS)
            _set_batchnorm(self.norm, _KERAS_MOMENTUM, _KERAS_HEAD_EPS)

    def feature_maps(self, images: Tensor) -> Tensor:
        """The ``(N, 512, H/32, W/32)`` output of the head's conv and its ReLU (Grad-CAM's target layer)."""
        out: Tensor = self.conv_relu(self.conv(self.features_relu(self.features(images))))
        return out

    def classify(self, maps: Tensor) -> Tensor:
        """Logits from :meth:`feature_maps`'s output (BatchNorm, pooling, classifier)."""
        out: Tensor = self.classifier(self.pool(self.norm(maps)))
        return out

    def embed(self, images: Tensor) -> Tensor:
        """The pooled ``(N, 512)`` features: everything before the classifier (the only layers with dropout)."""
        out: Tensor = self.pool(self.norm(self.feature_maps(images)))
        return out

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.feature_maps(images))

    @torch.no_grad()
    def mc_dropout_logits(self, images: Tensor, passes: int, batchnorm: str = "inference") -> Tensor:
        """``(passes, N, C)`` logits of ``passes`` stochastic forward passes; the model's mode is restored.

        Args:
            images: ``(N, 3, H, W)``.
            passes: the number of passes.
            batchnorm: ``'inference'``: dropout on, BatchNorm on its running statistics; the features are
                computed once and the classifier ``passes`` times, which equals ``passes`` full passes.
                ``'training'``: the whole model in training mode (BatchNorm normalises with each batch's
                statistics); the running statistics are left as they were.

        Raises:
            ValueError: if ``passes < 1`` or on an unknown ``batchnorm``.
        """
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        if batchnorm not in MC_BATCHNORM:
            raise ValueError(f"batchnorm must be one of {MC_BATCHNORM}, got {batchnorm!r}")
        was_training = self.training
        buffers = {name: value.clone() for name, value in self.named_buffers()}
        try:
            if batchnorm == "training":
                self.train()
                return torch.stack([self(images) for _ in range(passes)])
            self.eval()
            embedding = self.embed(images)
            self.classifier.train()
            return torch.stack([self.classifier(embedding) for _ in range(passes)])
        finally:
            self.train(was_training)
            for name, value in self.named_buffers():
                value.copy_(buffers[name])
