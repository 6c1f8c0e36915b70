"""Level plans: the labels each level of a walk writes and the labels each of them reads, in groups."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ["HierarchyLike", "LevelPlan", "PlanKind"]


class HierarchyLike(Protocol):
    """What a plan reads of a :class:`~hierloss.Hierarchy` (the engine sits below it and does not import it)."""

    @property
    def num_labels(self) -> int: ...
    @property
    def edge_indices(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def heights(self) -> tuple[int, ...]: ...
    @property
    def depths(self) -> tuple[int, ...]: ...


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
    def build(cls, hierarchy: HierarchyLike, kind: PlanKind, device: torch.device | str | None = None) -> LevelPlan:
        """The plan of ``hierarchy`` for one kind of walk, built on the CPU in ``O(C + E)`` and copied to
        ``device``."""
        if kind not in ("descendants", "ancestors", "parents"):
            raise ValueError(f"kind must be 'descendants', 'ancestors' or 'parents', got {kind!r}")
        built = _BUILT.setdefault(hierarchy, {})
        if kind not in built:
            # the edges as plain integers, not a tensor: a plan can be built while torch.export traces the model
            pairs = np.asarray(hierarchy.edge_indices, dtype=np.int64).reshape(-1, 2)
            parents, children = pairs[:, 0], pairs[:, 1]
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
_Arrays = tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]
_BUILT: weakref.WeakKeyDictionary[HierarchyLike, dict[str, _Arrays]] = weakref.WeakKeyDictionary()

# The cost of one more group, in padded rows: a group costs about ten small operations whatever its size, as much as
# gathering and reducing this many rows of a few hundred samples. A level's labels are split into the groups that
# minimise (groups · GROUP_COST + padded rows).
GROUP_COST = 32


def _split_level(widths: np.ndarray, counts: np.ndarray) -> list[int]:
    """Given a level's distinct row widths (ascending) and how many labels have each, the end (exclusive) of each
    group, in distinct-width positions: a shortest-path split minimising ``groups·GROUP_COST + Σ rows·width``."""
    d = widths.size
    cum = np.concatenate([[0], np.cumsum(counts)])
    best = np.full(d + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(d + 1, dtype=np.int64)
    for j in range(1, d + 1):
        costs = best[:j] + GROUP_COST + (cum[j] - cum[:j]) * widths[j - 1]
        cut[j] = int(np.argmin(costs))
        best[j] = costs[cut[j]]
    ends: list[int] = []
    j = d
    while j > 0:
        ends.append(j)
        j = int(cut[j])
    return ends[::-1]


def _plan_arrays(owner: np.ndarray, read: np.ndarray, level: np.ndarray, num_labels: int,
                 with_self: bool) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """(nodes, flat neighbour matrices, group shapes) of the labels that own at least one edge."""
    order = np.lexsort((read, owner))  # by owner, then by the label read: rows in column order
    owner, read = owner[order], read[order]
    counts = np.bincount(owner, minlength=num_labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    labels = np.flatnonzero(counts)
    width = counts[labels] + int(with_self)
    key = np.lexsort((labels, width, level[labels]))  # by level, then width, then label
    labels, width = labels[key], width[key]
    lv = level[labels]
    nodes: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    groups: list[tuple[int, int]] = []
    level_bounds = np.flatnonzero(np.diff(lv) != 0) + 1 if labels.size else np.zeros(0, dtype=np.int64)
    for members in np.split(np.arange(labels.size), level_bounds) if labels.size else []:
        ws, first, per_width = np.unique(width[members], return_index=True, return_counts=True)
        begin = 0
        for end in _split_level(ws, per_width):
            chunk = members[first[begin]:first[end - 1] + per_width[end - 1]]
            begin = end
            ls, k_wide = labels[chunk], int(ws[end - 1])
            deg = counts[ls]
            cols = np.arange(k_wide)[None, :] - int(with_self)  # column j reads neighbour j - with_self
            valid = (cols >= 0) & (cols < deg[:, None])
            idx = np.where(valid, starts[ls][:, None] + np.maximum(cols, 0), 0)
            mat = np.where(valid, read[idx], -1)
            if with_self:
                mat[:, 0] = ls
            mat = np.where(mat < 0, mat[:, :1], mat)  # pad by repeating the row's first entry
            nodes.append(ls)
            mats.append(mat.reshape(-1))
            groups.append((int(ls.size), k_wide))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(nodes).astype(np.int64) if nodes else empty,
            np.concatenate(mats).astype(np.int64) if mats else empty, tuple(groups))
