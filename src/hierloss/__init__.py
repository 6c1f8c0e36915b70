"""hierloss: hierarchy-aware losses, penalties and metrics for multi-label classification in PyTorch."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hierloss import functional
    from hierloss.hierarchy import Hierarchy
    from hierloss.layers import ChainRule, LabelGraphRefinement, MaxConstraint
    from hierloss.losses import (
        AsymmetricLoss,
        ChainRuleBCELoss,
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

#: Public names and the module each comes from, imported on first use: ``import hierloss`` (and so the
#: ``hierloss`` command's ``--help``) imports neither torch nor pandas, networkx, matplotlib or torchmetrics.
_NAMES: dict[str, str] = {
    "Hierarchy": "hierloss.hierarchy",
    **{name: "hierloss.layers" for name in ("ChainRule", "LabelGraphRefinement", "MaxConstraint")},
    **{name: "hierloss.losses" for name in ("AsymmetricLoss", "ChainRuleBCELoss", "ConditionalBCELoss", "FocalLoss",
                                            "HBCELoss", "HierarchyPenalty", "MCLoss", "MultiLabelSoftmaxLoss",
                                            "ZLPRLoss")},
}
#: Submodules reachable as attributes (``hierloss.metrics.coherent``), imported on first use.
_SUBMODULES = ("datasets", "edge_weights", "functional", "layers", "losses", "metrics", "propagation")


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"hierloss.{name}")
    raise AttributeError(f"module 'hierloss' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})


__all__ = [
    "AsymmetricLoss",
    "ChainRule",
    "ChainRuleBCELoss",
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
