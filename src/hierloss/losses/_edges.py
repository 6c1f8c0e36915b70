"""Turning a hierarchy and an ``edge_weight`` argument into the ``(edge_index, edge_weight)`` constants of a loss, and
a loss's hyper-parameters into one frozen, checked settings object."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hierloss._hierarchy_module import HierarchyModule
from hierloss._penalty_forms import FORMS, MODES, PenaltyForm
from hierloss._reduction import check_reduction
from hierloss.hierarchy import Hierarchy, check_hierarchy

__all__ = ["EdgeModule", "PenaltySettings", "Setting", "check_penalty_args", "resolve_edges", "resolve_scale",
           "resolve_settings"]

EDGE_REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def _is_real(value: object) -> bool:
    """A real number that is not a bool: Python ``int``/``float`` and NumPy scalars."""
    return isinstance(value, (int, float, numbers.Real)) and not isinstance(value, (bool, np.bool_))


def resolve_scale(form: PenaltyForm, scale: float | None) -> float:
    """The effective λ: ``scale``, or the form's default (``form.default_scale``) when ``None``.

    Raises:
        ValueError: if ``scale`` is negative, NaN or infinite (a negative λ would reward violations).
    """
    if scale is None:
        return form.default_scale
    # comparisons only (no math.isfinite): they also hold for the symbolic floats torch.compile traces when a
    # scale changes between calls; NaN and inf fail them
    if not _is_real(scale) or not 0 <= scale < math.inf:
        raise ValueError(f"scale must be a finite number >= 0 (or None for the mode's default), got {scale!r}")
    return float(scale)


def check_penalty_args(mode: str, threshold: float, temperature: float,
                       edge_reduction: str | None) -> tuple[PenaltyForm, str]:
    """Validate the penalty's hyper-parameters; return the form of ``mode`` and the effective edge reduction.

    ``edge_reduction=None`` means the form's default: ``'sum'`` for ``'hard'`` (the reference) and ``'mean'``
    for the trainable modes.
    """
    if not isinstance(mode, str) or mode not in FORMS:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    if not (_is_real(threshold) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if not (_is_real(temperature) and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    form = FORMS[mode]
    if edge_reduction is None:
        return form, form.default_edge_reduction
    if edge_reduction not in EDGE_REDUCTIONS:
        raise ValueError(f"edge_reduction must be 'sum', 'mean' or None, got {edge_reduction!r}")
    return form, edge_reduction


@dataclass(frozen=True)
class PenaltySettings:
    """The hyper-parameters of a hierarchy loss, checked once by :func:`resolve_settings` and frozen.

    A module resolves them in ``__init__`` (and again when one of its attributes is assigned) and passes this one
    object on every call, so that ``forward`` re-checks nothing.

    Attributes:
        form: the penalty form of ``mode`` (:data:`~hierloss._penalty_forms.FORMS`).
        scale: λ, the mode's default already substituted for ``None``.
        edge_reduction: ``'sum'`` or ``'mean'`` over edges, the form's default already substituted for ``None``.
        threshold: decision threshold of ``'hard'`` and ``'soft'``.
        temperature: temperature of ``'soft'``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over samples.
        from_logits: whether the input holds logits.
        validate_args: whether ``forward`` checks values.
        ignore_index: the target value to leave out (HBCE only).
    """

    form: PenaltyForm
    scale: float
    edge_reduction: str
    threshold: float
    temperature: float
    reduction: str
    from_logits: bool
    validate_args: bool
    ignore_index: float | None = None

    def edge_scale(self, num_edges: int) -> float:
        """The factor on every ``w_e``: ``λ / E`` with ``edge_reduction='mean'`` (``λ`` without edges), else ``λ``."""
        return self.scale / num_edges if self.edge_reduction == "mean" and num_edges else self.scale


def resolve_settings(mode: str, scale: float | None, threshold: float, temperature: float,
                     edge_reduction: str | None, reduction: str, from_logits: bool = True,
                     validate_args: bool = True, ignore_index: float | None = None) -> PenaltySettings:
    """Check every hyper-parameter of a hierarchy loss once and freeze them (see :class:`PenaltySettings`).

    Raises:
        ValueError: naming the first bad value (mode, threshold, temperature, edge reduction, scale, reduction).
    """
    form, effective_edge_reduction = check_penalty_args(mode, threshold, temperature, edge_reduction)
    return PenaltySettings(form, resolve_scale(form, scale), effective_edge_reduction, float(threshold),
                           float(temperature), check_reduction(reduction), bool(from_logits), bool(validate_args),
                           ignore_index)


def resolve_edges(hierarchy: Hierarchy, edge_weight: Any = 1.0, closure: bool = False) -> tuple[Tensor, Tensor]:
    """Return ``(edge_index (2, E) long, edge_weight (E,) float32)`` for ``hierarchy`` (or its closure).

    Args:
        hierarchy: the label hierarchy.
        edge_weight: the weights ``w_e`` of the edges: a number (Python or NumPy) or a 0-d tensor, the same on every
            edge; a sequence, NumPy array or 1-D tensor of length ``E`` in ``edges`` order; a mapping
            ``{(parent, child): value}`` naming every edge; or an :class:`~hierloss.edge_weights.EdgeWeights` fitted
            on the same hierarchy. A tensor's values are copied (no gradient flows to them).
        closure: weigh every (ancestor, descendant) pair of ``hierarchy.closure()`` instead of direct edges;
            per-edge weights must then follow ``hierarchy.closure().edges``.

    Raises:
        ValueError: on a length mismatch, unknown or missing edges (named), a negative or non-finite weight
            (naming its edge), or weights fitted on another hierarchy.
        TypeError: if ``hierarchy`` is not a Hierarchy, or on an ``edge_weight`` that is not numbers (a bool, a
            string, ...), saying what to pass.
    """
    check_hierarchy(hierarchy)
    target = hierarchy.closure() if closure else hierarchy
    edges = target.edges
    where = "hierarchy.closure().edges" if closure else "hierarchy.edges"
    kinds = ("a number or 0-d tensor (the same weight on every edge), a sequence, NumPy array or 1-D tensor of one "
             "weight per edge, a {(parent, child): weight} mapping, or EdgeWeights")
    values: Tensor
    if isinstance(edge_weight, (bool, np.bool_, str, bytes)):
        raise TypeError(f"edge_weight must be {kinds}; got {type(edge_weight).__name__}")
    if hasattr(edge_weight, "values") and hasattr(edge_weight, "hierarchy") and not isinstance(edge_weight, Mapping):
        if edge_weight.hierarchy != target:
            raise ValueError(
                "edge_weight was fitted on another hierarchy"
                + ("; with closure=True fit it on hierarchy.closure()" if closure else "")
            )
        values = torch.as_tensor(edge_weight.values, dtype=torch.float64)
    elif isinstance(edge_weight, Mapping):
        known = set(edges)
        given = {tuple(k) for k in edge_weight}
        unknown = sorted(given - known)
        if unknown:
            raise ValueError(f"edge_weight names edges that are not in {where}: {unknown[:10]!r}")
        missing = [e for e in edges if e not in given]
        if missing:
            raise ValueError(f"edge_weight is missing edges of {where}: {missing[:10]!r}")
        values = torch.tensor([float(edge_weight[e]) for e in edges], dtype=torch.float64)
    else:
        values = _weights_as_tensor(edge_weight, kinds)
        if values.ndim == 0:  # one weight for every edge
            values = values.expand(len(edges))
        elif values.ndim != 1 or values.numel() != len(edges):
            raise ValueError(f"Expected {len(edges)} edge weights (one per edge of {where}), got shape "
                             f"{tuple(values.shape)}")
    bad = ~torch.isfinite(values) | (values < 0)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(f"weight of edge {edges[k]!r} is {float(values[k])!r}; edge weights must be finite and >= 0")
    return target.edge_index, values.to(torch.float32).contiguous()


def _weights_as_tensor(edge_weight: Any, kinds: str) -> Tensor:
    """Numbers (a scalar, a sequence, a NumPy array, a tensor) as a float64 CPU tensor, detached; ``TypeError``
    saying what to pass for anything else."""
    if isinstance(edge_weight, Tensor):
        if edge_weight.dtype == torch.bool or edge_weight.is_complex():
            raise TypeError(f"edge_weight must be {kinds}; got a {edge_weight.dtype} tensor")
        return edge_weight.detach().to("cpu", torch.float64)
    if not (_is_real(edge_weight) or isinstance(edge_weight, (Sequence, np.ndarray))):
        raise TypeError(f"edge_weight must be {kinds}; got {type(edge_weight).__name__}")
    array = np.asarray(edge_weight)
    if array.dtype.kind not in "iuf":  # not integers or floats
        held = _KIND_NAMES.get(array.dtype.kind, f"{array.dtype} values")
        raise TypeError(f"edge_weight must be {kinds}; got {type(edge_weight).__name__} holding {held}")
    return torch.as_tensor(array, dtype=torch.float64)


_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "strings", "O": "objects"}


class Setting:
    """A hyper-parameter attribute of an :class:`EdgeModule` (``loss.scale``, ``loss.reduction``, ...).

    Reading gives the argument as passed (``scale`` with the mode's default substituted); assigning one checks the
    new value at once and re-resolves the module's frozen :class:`PenaltySettings`, which ``forward`` passes on (a
    λ schedule is ``loss.scale = value``).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, module: Any, owner: type | None = None) -> Any:
        if module is None:
            return self
        return module._arguments[self.name]

    def __set__(self, module: Any, value: Any) -> None:
        module._set_arguments({**module._arguments, self.name: value})


class EdgeModule(HierarchyModule):
    """Base of the modules whose constants are a hierarchy's edges and their weights: the :class:`HierarchyModule`
    base (``edge_index`` buffer, the state-dict guard naming the first differing edge) plus an ``edge_weight``
    buffer (the weights ``w_e``, which load freely) and the frozen penalty settings.
    """

    edge_weight: Tensor
    _arguments: dict[str, Any]
    _settings: PenaltySettings

    def __init__(self, hierarchy: Hierarchy, edge_weight: Any, closure: bool) -> None:
        edge_index, weight = resolve_edges(hierarchy, edge_weight, closure)
        super().__init__(hierarchy, edge_index)
        self.closure = closure
        self.register_buffer("edge_weight", weight)

    def _set_arguments(self, arguments: dict[str, Any]) -> None:
        """Resolve the keyword arguments of :func:`resolve_settings` into the frozen settings (raising, and keeping
        the previous ones, on a bad value) and keep them for the :class:`Setting` attributes."""
        settings = resolve_settings(**arguments)
        self.__dict__["_arguments"] = {**arguments, "scale": settings.scale}
        self.__dict__["_settings"] = settings

