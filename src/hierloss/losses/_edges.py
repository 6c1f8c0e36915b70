"""Turning a hierarchy and an ``edge_weight`` argument into the ``(edge_index, edge_weight)`` constants of a loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hierloss._hierarchy_module import HierarchyModule
from hierloss._penalty_forms import PenaltySettings, is_real, resolve_settings
from hierloss.hierarchy import Hierarchy, check_hierarchy

__all__ = ["EdgeModule", "Setting", "resolve_edges"]

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
    if not (is_real(edge_weight) or isinstance(edge_weight, (Sequence, np.ndarray))):
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

    # hyper-parameters: assigning one (``loss.scale = 0.3``) checks it and takes effect on the next call
    mode = Setting()
    scale = Setting()
    threshold = Setting()
    temperature = Setting()
    edge_reduction = Setting()
    reduction = Setting()
    from_logits = Setting()
    validate_args = Setting()

    def __init__(self, hierarchy: Hierarchy, edge_weight: Any, closure: bool, arguments: dict[str, Any]) -> None:
        """``arguments``: the keyword arguments of :func:`resolve_settings`, checked before anything is built."""
        resolve_settings(**arguments)
        edge_index, weight = resolve_edges(hierarchy, edge_weight, closure)
        super().__init__(hierarchy, edge_index)
        self.closure = closure
        self.register_buffer("edge_weight", weight)
        self._set_arguments(arguments)

    def _set_arguments(self, arguments: dict[str, Any]) -> None:
        """Resolve the keyword arguments of :func:`resolve_settings` into the frozen settings (raising, and keeping
        the previous ones, on a bad value) and keep them for the :class:`Setting` attributes."""
        settings = resolve_settings(**arguments)
        self.__dict__["_arguments"] = {**arguments, "scale": settings.scale}
        self.__dict__["_settings"] = settings

