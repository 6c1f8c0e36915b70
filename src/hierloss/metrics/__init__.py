"""Consistency metrics, coherent projection, and the standard scores.

The functional metrics need only torch (and pandas for :func:`consistency_report`). The streaming ``Metric``
classes (``ViolationRate``, ``HierarchicalF1``, ``AUROC``, ``AveragePrecision``) need torchmetrics
(``pip install 'hierloss[metrics]'``) and the plots matplotlib (``pip install 'hierloss[plot]'``); both are
imported on first use, so ``import hierloss.metrics`` works without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hierloss.metrics.consistency import (
    consistency_report,
    edge_violation_counts,
    edge_violation_rates,
    edge_violations,
    sample_violations,
    violation_rate,
)
from hierloss.metrics.hierarchical_prf import hierarchical_prf
from hierloss.metrics.projection import coherent
from hierloss.metrics.scores import auroc, average_precision

if TYPE_CHECKING:
    from hierloss.metrics.plot import plot_edge_violations, plot_hierarchy
    from hierloss.metrics.streaming import AUROC, AveragePrecision, HierarchicalF1, ViolationRate

__all__ = [
    "AUROC",
    "AveragePrecision",
    "HierarchicalF1",
    "ViolationRate",
    "auroc",
    "average_precision",
    "coherent",
    "consistency_report",
    "edge_violation_counts",
    "edge_violation_rates",
    "edge_violations",
    "hierarchical_prf",
    "plot_edge_violations",
    "plot_hierarchy",
    "sample_violations",
    "violation_rate",
]

_LAZY = {
    "AUROC": "streaming", "AveragePrecision": "streaming", "HierarchicalF1": "streaming",
    "ViolationRate": "streaming", "plot_edge_violations": "plot", "plot_hierarchy": "plot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"hierloss.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'hierloss.metrics' has no attribute {name!r}")
