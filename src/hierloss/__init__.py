"""hierloss: hierarchy-aware losses, penalties and metrics for multi-label classification in PyTorch."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from hierloss import functional
from hierloss.hierarchy import Hierarchy
from hierloss.layers import ChainRule, LabelGraphRefinement, MaxConstraint
from hierloss.losses import (
    AsymmetricLoss,
    ConditionalBCELoss,
    FocalLoss,
    HBCELoss,
    HierarchyPenalty,
    MCLoss,
    MultiLabelSoftmaxLoss,
    ZLPRLoss,
)

try:
    __version__ = version("hierloss")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

#: Submodules reachable as attributes (``hierloss.metrics.coherent``), imported on first use so that
#: ``import hierloss`` stays light: it imports neither pandas, networkx, matplotlib nor torchmetrics.
_SUBMODULES = ("datasets", "edge_weights", "layers", "losses", "metrics", "propagation")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"hierloss.{name}")
    raise AttributeError(f"module 'hierloss' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})

__all__ = [
    "AsymmetricLoss",
    "ChainRule",
    "ConditionalBCELoss",
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
