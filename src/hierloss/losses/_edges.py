"""Turning a hierarchy and a ``penalties`` argument into the ``(edge_index, edge_weight)`` constants of a loss."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from hierloss.hierarchy import Hierarchy

__all__ = ["DIFFERENCE_MODES", "MODES", "check_penalty_args", "resolve_edges", "resolve_scale"]

MODES: tuple[str, ...] = ("soft", "hard", "hinge", "squared_hinge", "logit_hinge")
#: Modes whose penalty is a function of ``v_child − v_parent`` only (the fused loss reads them with one GEMM).
DIFFERENCE_MODES: tuple[str, ...] = ("hinge", "squared_hinge", "logit_hinge")
EDGE_REDUCTIONS: tuple[str, ...] = ("sum", "mean")
#: ``scale=None`` means this λ for the mode (1.0 for modes not listed); see ``docs/hbce.md`` for the evidence.
DEFAULT_SCALES: dict[str, float] = {"logit_hinge": 0.1}


def resolve_scale(mode: str, scale: float | None) -> float:
    """The effective λ: ``scale``, or the mode's default (:data:`DEFAULT_SCALES`, else 1.0) when ``None``.

    Raises:
        ValueError: if ``scale`` is negative, NaN or infinite (a negative λ would reward violations).
    """
    if scale is None:
        return DEFAULT_SCALES.get(mode, 1.0)
    # comparisons only (no math.isfinite): they also hold for the symbolic floats torch.compile traces when a
    # scale changes between calls; NaN and inf fail them
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < math.inf:
        raise ValueError(f"scale must be a finite number >= 0 (or None for the mode's default), got {scale!r}")
    return float(scale)


def check_penalty_args(mode: str, threshold: float, temperature: float, edge_reduction: str | None) -> str:
    """Validate the penalty's hyper-parameters; return the effective edge reduction.

    ``edge_reduction=None`` means the mode's default: ``'sum'`` for ``'hard'`` (the reference) and ``'mean'``
    for the trainable modes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if edge_reduction is None:
        return "sum" if mode == "hard" else "mean"
    if edge_reduction not in EDGE_REDUCTIONS:
        raise ValueError(f"edge_reduction must be 'sum', 'mean' or None, got {edge_reduction!r}")
    return edge_reduction


def resolve_edges(hierarchy: Hierarchy, penalties: Any, closure: bool = False) -> tuple[Tensor, Tensor]:
    """Return ``(edge_index (2, E) long, edge_weight (E,) float32)`` for ``hierarchy`` (or its closure).

    Args:
        hierarchy: the label hierarchy.
        penalties: a float (the same penalty on every edge), a sequence or 1-D tensor of length ``E`` in
            ``edges`` order, a mapping ``{(parent, child): value}`` naming every edge, or an
            :class:`~hierloss.penalties.EdgePenalties` fitted on the same hierarchy.
        closure: penalise every (ancestor, descendant) pair of ``hierarchy.closure()`` instead of direct edges;
            per-edge penalties must then follow ``hierarchy.closure().edges``.

    Raises:
        ValueError: on a length mismatch, unknown or missing edges (named), a negative or non-finite penalty
            (naming its edge), or penalties fitted on another hierarchy.
        TypeError: on an unsupported ``penalties`` type.
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"expected a hierloss.Hierarchy, got {type(hierarchy).__name__}")
    target = hierarchy.closure() if closure else hierarchy
    edges = target.edges
    where = "hierarchy.closure().edges" if closure else "hierarchy.edges"
    values: Tensor
    if isinstance(penalties, bool):
        raise TypeError("penalties must be a number, a sequence, a tensor, a mapping or EdgePenalties, got bool")
    if isinstance(penalties, (int, float)):
        values = torch.full((len(edges),), float(penalties), dtype=torch.float64)
    elif hasattr(penalties, "values") and hasattr(penalties, "hierarchy") and not isinstance(penalties, Mapping):
        if penalties.hierarchy != target:
            raise ValueError(
                "penalties were fitted on another hierarchy"
                + ("; with closure=True fit them on hierarchy.closure()" if closure else "")
            )
        values = torch.as_tensor(penalties.values, dtype=torch.float64)
    elif isinstance(penalties, Mapping):
        known = set(edges)
        given = {tuple(k) for k in penalties}
        unknown = sorted(given - known)
        if unknown:
            raise ValueError(f"penalties name edges that are not in {where}: {unknown[:10]!r}")
        missing = [e for e in edges if e not in given]
        if missing:
            raise ValueError(f"penalties are missing edges of {where}: {missing[:10]!r}")
        values = torch.tensor([float(penalties[e]) for e in edges], dtype=torch.float64)
    elif isinstance(penalties, Tensor) or (isinstance(penalties, Sequence) and not isinstance(penalties, str)):
        values = torch.as_tensor(penalties, dtype=torch.float64).detach().cpu()
        if values.ndim != 1 or values.numel() != len(edges):
            raise ValueError(f"Expected {len(edges)} penalties (one per edge of {where}), got shape "
                             f"{tuple(values.shape)}")
    else:
        raise TypeError("penalties must be a number, a sequence, a tensor, a mapping or EdgePenalties, got "
                        f"{type(penalties).__name__}")
    bad = ~torch.isfinite(values) | (values < 0)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(f"penalty of edge {edges[k]!r} is {float(values[k])!r}; penalties must be finite and >= 0")
    return target.edge_index, values.to(torch.float32)
