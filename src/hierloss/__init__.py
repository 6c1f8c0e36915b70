"""hierloss: hierarchy-aware losses, penalties and metrics for multi-label classification in PyTorch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from hierloss.hierarchy import Hierarchy
from hierloss.losses import HBCELoss, HierarchyPenalty

try:
    __version__ = version("hierloss")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "HBCELoss",
    "Hierarchy",
    "HierarchyPenalty",
    "__version__",
]
