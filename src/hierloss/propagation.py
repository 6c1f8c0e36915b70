"""Level-wise propagation of scores along a hierarchy, without dense ``(N, L, L)`` tensors.

Two operations underlie the true-path rule, coherent projection and C-HMCNN's max-constraint module:

* ``max_over_descendants``: every column becomes the max over itself and all its descendants;
* ``min_over_ancestors``: every column becomes the min over itself and all its ancestors.

Both are computed exactly on DAGs by walking the hierarchy level by level. For the upward pass, the level of a
label is its *height* (0 for leaves, ``1 + max(height(child))`` otherwise): when the edges into labels of height
``h`` are processed, every child already holds its final value. The downward pass uses *depth* (longest path
from a root) symmetrically. Each level is one ``gather`` and one ``scatter_reduce``: ``O(N·E)`` work,
``O(N·(L + E_level))`` memory, autograd-friendly (out-of-place), and free of host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from hierloss.hierarchy import Hierarchy

__all__ = [
    "PropagationPlan",
    "max_over_descendants",
    "min_over_ancestors",
    "propagate_levels",
]


@dataclass(frozen=True)
class PropagationPlan:
    """Edges grouped into levels for :func:`propagate_levels`.

    Attributes:
        source: ``(E,)`` long tensor of the columns read at each edge.
        target: ``(E,)`` long tensor of the columns written at each edge.
        sizes: number of edges in each level, in processing order (Python ints, so no host sync).
        reduce: ``'amax'`` (upward, max over descendants) or ``'amin'`` (downward, min over ancestors).
    """

    source: Tensor
    target: Tensor
    sizes: tuple[int, ...]
    reduce: Literal["amax", "amin"]

    @classmethod
    def upward(cls, hierarchy: Hierarchy, device: torch.device | str | None = None) -> PropagationPlan:
        """Plan for max over self and descendants: edges grouped by the parent's height."""
        return cls._build(hierarchy, hierarchy.heights, by_parent=True, reduce="amax", device=device)

    @classmethod
    def downward(cls, hierarchy: Hierarchy, device: torch.device | str | None = None) -> PropagationPlan:
        """Plan for min over self and ancestors: edges grouped by the child's depth."""
        return cls._build(hierarchy, hierarchy.depths, by_parent=False, reduce="amin", device=device)

    @classmethod
    def _build(cls, hierarchy: Hierarchy, level: tuple[int, ...], by_parent: bool, reduce: Literal["amax", "amin"],
               device: torch.device | str | None) -> PropagationPlan:
        """Group the edges by the level of their parent (upward) or child (downward), keeping the canonical edge
        order within a level: one stable sort on the CPU, ``O(E log E)``, then one copy to ``device``."""
        parents, children = hierarchy.edge_index
        key = torch.tensor(level, dtype=torch.long, device="cpu")[parents if by_parent else children]
        order = torch.argsort(key, stable=True)
        sizes = torch.unique_consecutive(key[order], return_counts=True)[1].tolist() if key.numel() else []
        parents, children = parents[order], children[order]
        source, target = (children, parents) if by_parent else (parents, children)
        if device is not None:
            source, target = source.to(device), target.to(device)
        return cls(source=source, target=target, sizes=tuple(sizes), reduce=reduce)

    def to(self, device: torch.device | str) -> PropagationPlan:
        """Return the plan with its index tensors on ``device``."""
        return PropagationPlan(self.source.to(device), self.target.to(device), self.sizes, self.reduce)


def propagate_levels(values: Tensor, source: Tensor, target: Tensor, sizes: tuple[int, ...],
                     reduce: Literal["amax", "amin"]) -> Tensor:
    """Apply a :class:`PropagationPlan` to ``values`` of shape ``(..., L)``; returns a new tensor.

    Level ``k`` reads ``values[..., source[e]]`` and reduces it into ``values[..., target[e]]`` for the edges
    of that level. Out-of-place at every level, so the result is differentiable (gradients flow to the
    arg-max/arg-min, split evenly among ties as in :func:`torch.scatter_reduce`).
    """
    if values.ndim == 0:
        raise ValueError("Expected `values` with a label dimension, got a scalar")
    out = values
    start = 0
    lead = out.shape[:-1]
    for size in sizes:
        src_idx = source[start:start + size]
        tgt_idx = target[start:start + size]
        start += size
        gathered = out.index_select(-1, src_idx)
        out = out.scatter_reduce(-1, tgt_idx.expand(*lead, size), gathered, reduce=reduce, include_self=True)
    return out


def max_over_descendants(input: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Each label's score becomes the max over itself and all its descendants.

    Args:
        input: ``(..., C)`` scores with ``C = hierarchy.num_labels`` (probabilities, logits or 0/1).
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``.

    The level plan's index tensors are built (and copied to the device) on every call; in a training or
    inference loop use :class:`~hierloss.MaxConstraint`, which keeps them in buffers.
    """
    plan = PropagationPlan.upward(hierarchy, input.device)
    return propagate_levels(input, plan.source, plan.target, plan.sizes, plan.reduce)


def min_over_ancestors(input: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Each label's score becomes the min over itself and all its ancestors.

    Args:
        input: ``(..., C)`` scores with ``C = hierarchy.num_labels``.
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``.

    The level plan's index tensors are built (and copied to the device) on every call.
    """
    plan = PropagationPlan.downward(hierarchy, input.device)
    return propagate_levels(input, plan.source, plan.target, plan.sizes, plan.reduce)
