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
        heights = hierarchy.heights
        return cls._build(hierarchy, key=[heights[p] for p, _ in hierarchy.edge_indices], reduce="amax",
                          read_child=True, device=device)

    @classmethod
    def downward(cls, hierarchy: Hierarchy, device: torch.device | str | None = None) -> PropagationPlan:
        """Plan for min over self and ancestors: edges grouped by the child's depth."""
        depths = hierarchy.depths
        return cls._build(hierarchy, key=[depths[c] for _, c in hierarchy.edge_indices], reduce="amin",
                          read_child=False, device=device)

    @classmethod
    def _build(cls, hierarchy: Hierarchy, key: list[int], reduce: Literal["amax", "amin"], read_child: bool,
               device: torch.device | str | None) -> PropagationPlan:
        pairs = hierarchy.edge_indices
        order = sorted(range(len(pairs)), key=lambda e: key[e])
        parents = [pairs[e][0] for e in order]
        children = [pairs[e][1] for e in order]
        sizes: list[int] = []
        previous = None
        for e in order:
            if key[e] != previous:
                sizes.append(0)
                previous = key[e]
            sizes[-1] += 1
        source, target = (children, parents) if read_child else (parents, children)
        return cls(
            source=torch.tensor(source, dtype=torch.long, device=device),
            target=torch.tensor(target, dtype=torch.long, device=device),
            sizes=tuple(sizes),
            reduce=reduce,
        )

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


def max_over_descendants(values: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Each label's score becomes the max over itself and all its descendants.

    Args:
        values: ``(..., C)`` scores with ``C = hierarchy.num_labels`` (probabilities, logits or 0/1).
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``.

    The level plan's index tensors are built (and copied to the device) on every call; in a training or
    inference loop use :class:`~hierloss.MaxConstraint`, which keeps them in buffers.
    """
    plan = PropagationPlan.upward(hierarchy, values.device)
    return propagate_levels(values, plan.source, plan.target, plan.sizes, plan.reduce)


def min_over_ancestors(values: Tensor, hierarchy: Hierarchy) -> Tensor:
    """Each label's score becomes the min over itself and all its ancestors.

    Args:
        values: ``(..., C)`` scores with ``C = hierarchy.num_labels``.
        hierarchy: the label hierarchy.

    Returns:
        A tensor of the same shape, dtype and device; ``out[..., a] >= out[..., d]`` for every ancestor ``a``
        of ``d``.

    The level plan's index tensors are built (and copied to the device) on every call.
    """
    plan = PropagationPlan.downward(hierarchy, values.device)
    return propagate_levels(values, plan.source, plan.target, plan.sizes, plan.reduce)
