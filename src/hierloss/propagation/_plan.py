"""Level plans: the labels each level of a walk writes and the labels each of them reads, in groups."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from hierloss.hierarchy import Hierarchy

__all__ = ["LevelPlan", "PlanKind"]

PlanKind = Literal["descendants", "ancestors", "parents"]


@dataclass(frozen=True)
class LevelPlan:
    """The labels each level of a walk writes, and the labels each of them reads, in groups.

    Attributes:
        nodes: ``(G,)`` long tensor, the labels written, group after group.
        neighbours: ``(P,)`` long tensor, each group's ``(k, K)`` matrix of the labels read (row ``i`` for
            ``nodes[i]``), flattened row-major and concatenated; rows are padded by repeating their first entry.
        groups: ``(k, K)`` of each group in processing order (Python ints: slicing never reads the device).
        num_labels: ``C``.
        kind: ``'descendants'`` (rows: the label, then its children; groups by height, leaves first),
            ``'ancestors'`` (the label, then its parents; by depth, roots first) or ``'parents'`` (the parents
            only; by depth).
    """

    nodes: Tensor
    neighbours: Tensor
    groups: tuple[tuple[int, int], ...]
    num_labels: int
    kind: PlanKind

    @classmethod
    def build(cls, hierarchy: Hierarchy, kind: PlanKind, device: torch.device | str | None = None) -> LevelPlan:
        """The plan of ``hierarchy`` for one kind of walk, built on the CPU in ``O(C + E)`` and copied to
        ``device``."""
        if kind not in ("descendants", "ancestors", "parents"):
            raise ValueError(f"kind must be 'descendants', 'ancestors' or 'parents', got {kind!r}")
        built = _BUILT.setdefault(hierarchy, {})
        if kind not in built:
            parents, children = (t.numpy() for t in hierarchy.edge_index)
            if kind == "descendants":
                owner, read, level = parents, children, np.asarray(hierarchy.heights, dtype=np.int64)
            else:
                owner, read, level = children, parents, np.asarray(hierarchy.depths, dtype=np.int64)
            built[kind] = _plan_arrays(owner, read, level, hierarchy.num_labels, with_self=kind != "parents")
        nodes, neighbours, groups = built[kind]
        return cls(torch.tensor(nodes, device=device), torch.tensor(neighbours, device=device), groups,
                   hierarchy.num_labels, kind)

    def to(self, device: torch.device | str) -> LevelPlan:
        """The plan with its index tensors on ``device``."""
        return LevelPlan(self.nodes.to(device), self.neighbours.to(device), self.groups, self.num_labels, self.kind)


# The plans' arrays of the hierarchies in use, so that the functional forms do not rebuild them on every call. Keyed
# weakly (an entry goes with its hierarchy) and kept here, not on the Hierarchy, which stays a plain value.
_BUILT: weakref.WeakKeyDictionary[Hierarchy, dict[str, tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]]] = (
    weakref.WeakKeyDictionary())

# Group widths: a level's labels are grouped by the width of their row (itself + neighbours), rounded up to the
# next of these (then to multiples of 128), so a group pads at most ~1.5x while a level needs only a few groups.
_WIDTHS = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128], dtype=np.int64)


def _plan_arrays(owner: np.ndarray, read: np.ndarray, level: np.ndarray, num_labels: int,
                 with_self: bool) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """(nodes, flat neighbour matrices, group shapes) of the labels that own at least one edge."""
    order = np.lexsort((read, owner))  # by owner, then by the label read: rows in column order
    owner, read = owner[order], read[order]
    counts = np.bincount(owner, minlength=num_labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    labels = np.flatnonzero(counts)
    width = counts[labels] + int(with_self)
    rounded = np.where(width <= _WIDTHS[-1], _WIDTHS[np.minimum(np.searchsorted(_WIDTHS, width), len(_WIDTHS) - 1)],
                       -(-width // 128) * 128)
    key = np.lexsort((labels, rounded, level[labels]))  # by level, then width class, then label
    labels, rounded = labels[key], rounded[key]
    nodes: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    groups: list[tuple[int, int]] = []
    lv = level[labels]
    bounds = np.flatnonzero((np.diff(lv) != 0) | (np.diff(rounded) != 0)) + 1
    for chunk in np.split(np.arange(labels.size), bounds) if labels.size else []:
        ls, k_wide = labels[chunk], int(rounded[chunk[0]])
        deg = counts[ls]
        cols = np.arange(k_wide)[None, :] - int(with_self)  # column j reads neighbour j - with_self
        valid = (cols >= 0) & (cols < deg[:, None])
        idx = np.where(valid, starts[ls][:, None] + np.maximum(cols, 0), 0)
        mat = np.where(valid, read[idx], -1)
        if with_self:
            mat[:, 0] = ls
        first = mat[:, :1]
        mat = np.where(mat < 0, first, mat)  # pad by repeating the row's first entry
        nodes.append(ls)
        mats.append(mat.reshape(-1))
        groups.append((int(ls.size), k_wide))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(nodes).astype(np.int64) if nodes else empty,
            np.concatenate(mats).astype(np.int64) if mats else empty, tuple(groups))
