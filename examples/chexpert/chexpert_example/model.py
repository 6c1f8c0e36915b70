"""DenseNet121 features plus the paper's head: Conv2d 512 + BatchNorm, GAP, Linear 128, ReLU, Dropout, Linear."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import DenseNet121_Weights, densenet121

__all__ = ["CheXpertDenseNet"]


class CheXpertDenseNet(nn.Module):
    """The paper's model; ``forward`` returns logits ``(N, C)`` (the sigmoid is in the loss / at inference).

    ``features`` (torchvision's DenseNet121, ending with its last BatchNorm) → ReLU (as torchvision's own
    classifier applies) → ``head``: Conv2d 1024 → 512 (3×3, padding 1) + BatchNorm + ReLU, the map Grad-CAM
    explains → global average pooling → ``classifier``: Linear 512 → 128, ReLU, Dropout, Linear 128 → C.
    The paper names the head's layers, not the conv's kernel size or activation: 3×3 with a ReLU after the
    BatchNorm is this example's choice.

    Args:
        num_labels: ``C`` (21 with 'Uncertain', 20 without).
        pretrained: start from torchvision's ImageNet weights (downloads them unless cached); the paper trained
            from scratch.
        dropout: dropout probability before the last layer (the paper: 0.5; also Monte Carlo dropout's).

    Shape:
        input ``(N, 3, H, W)``, output ``(N, C)``.
    """

    def __init__(self, num_labels: int, pretrained: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        weights = DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None
        self.features = densenet121(weights=weights).features
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(1024, 512, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(512, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_labels),
        )

    def feature_maps(self, images: Tensor) -> Tensor:
        """The ``(N, 512, H/32, W/32)`` map after the head (Grad-CAM's target layer)."""
        out: Tensor = self.head(self.features(images))
        return out

    def classify(self, maps: Tensor) -> Tensor:
        """Logits from :meth:`feature_maps`'s output."""
        out: Tensor = self.classifier(self.pool(maps))
        return out

    def embed(self, images: Tensor) -> Tensor:
        """The pooled ``(N, 512)`` features: everything before the classifier (the only layers with dropout)."""
        out: Tensor = self.pool(self.feature_maps(images))
        return out

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.feature_maps(images))

    @torch.no_grad()
    def mc_dropout_logits(self, images: Tensor, passes: int) -> Tensor:
        """``(passes, N, C)`` logits with dropout active and everything else in eval mode.

        Dropout sits in the classifier only, so the features are computed once and the classifier ``passes``
        times; this equals ``passes`` full forward passes with dropout on.
        """
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        was_training = self.training
        self.eval()
        try:
            embedding = self.embed(images)
            self.classifier.train()
            return torch.stack([self.classifier(embedding) for _ in range(passes)])
        finally:
            self.train(was_training)
