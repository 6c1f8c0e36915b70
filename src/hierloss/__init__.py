"""hierloss: hierarchy-aware losses, penalties and metrics for multi-label classification in PyTorch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from hierloss import functional
from hierloss.hierarchy import Hierarchy
from hierloss.losses import (
    AsymmetricLoss,
    FocalLoss,
    HBCELoss,
    HierarchyPenalty,
    LabelGraphRefinement,
    MaxConstraint,
    MCLoss,
    MultiLabelSoftmaxLoss,
    ZLPRLoss,
)

try:
    __version__ = version("hierloss")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "AsymmetricLoss",
    "FocalLoss",
    "HBCELoss",
    "Hierarchy",
    "HierarchyPenalty",
    "LabelGraphRefinement",
    "MCLoss",
    "MaxConstraint",
    "MultiLabelSoftmaxLoss",
    "ZLPRLoss",
    "__version__",
    "functional",
]
