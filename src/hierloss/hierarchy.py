"""The label hierarchy: a validated, immutable DAG over the columns of a label matrix."""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

from hierloss.propagation import PropagationPlan, propagate_levels

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

__all__ = ["Hierarchy"]

_ArrayT = TypeVar("_ArrayT", np.ndarray, Tensor, "pd.DataFrame")


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{where}: label names must be strings, got {name!r} of type {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"{where}: label names must be non-empty, got {name!r}")
    return name


class Hierarchy:
    """A directed acyclic graph of labels; edges point parent → child.

    ``labels`` fixes the column order of every label matrix and model output used with this hierarchy. A node
    may have several parents (DAGs are first-class) and a label may belong to no edge at all (CheXpert's
    'No Finding'). Edges are kept in a canonical order, sorted by ``(index(parent), index(child))``, which is
    the order of :attr:`edges`, :attr:`edge_index` and every per-edge tensor in hierloss.

    Instances are immutable, hashable and picklable; two hierarchies are equal when they have the same labels in
    the same order and the same edges.

    Args:
        labels: the label names, in column order. Non-empty strings, no duplicates.
        edges: ``(parent, child)`` pairs naming labels of ``labels``.

    Raises:
        ValueError: on a duplicate label, an empty name, an edge naming an unknown label, a self-loop, a
            duplicate edge or a cycle. The message names the offender.
        TypeError: on a non-string name or an edge that is not a pair.

    Example:
        >>> h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
        >>> h.labels
        ('Abnormal', 'Cardiac', 'Cardiomegaly')
        >>> h.edge_index
        tensor([[0, 1],
                [1, 2]])
        >>> h.ancestors("Cardiomegaly")
        ('Abnormal', 'Cardiac')
    """

    _labels: tuple[str, ...]
    _edges: tuple[tuple[str, str], ...]
    _index: dict[str, int]
    _pairs: tuple[tuple[int, int], ...]
    _frozen: bool

    def __init__(self, labels: Iterable[str], edges: Iterable[tuple[str, str]] = ()) -> None:
        if isinstance(labels, str):
            raise TypeError(f"`labels` must be a sequence of names, got the string {labels!r}")
        label_tuple = tuple(_check_name(name, f"label at position {i}") for i, name in enumerate(labels))
        index: dict[str, int] = {}
        for i, name in enumerate(label_tuple):
            if name in index:
                raise ValueError(f"duplicate label {name!r} at positions {index[name]} and {i}")
            index[name] = i
        pairs: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        for edge in edges:
            if isinstance(edge, str) or not isinstance(edge, Sequence) or len(edge) != 2:
                raise TypeError(f"edges must be (parent, child) pairs, got {edge!r}")
            parent = _check_name(edge[0], f"edge {tuple(edge)!r}")
            child = _check_name(edge[1], f"edge {tuple(edge)!r}")
            for name in (parent, child):
                if name not in index:
                    raise ValueError(f"edge {(parent, child)!r}: {name!r} is not a label of the hierarchy")
            if parent == child:
                raise ValueError(f"edge {(parent, child)!r} is a self-loop")
            pair = (index[parent], index[child])
            if pair in seen:
                raise ValueError(f"duplicate edge {(parent, child)!r}")
            seen.add(pair)
            pairs.append(pair)
        pairs.sort()
        object.__setattr__(self, "_labels", label_tuple)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_edges", tuple((label_tuple[p], label_tuple[c]) for p, c in pairs))
        object.__setattr__(self, "_pairs", tuple(pairs))
        self._check_acyclic()
        object.__setattr__(self, "_frozen", True)

    # ------------------------------------------------------------------ constructors and conversions
    @classmethod
    def from_edges(cls, edges: Iterable[tuple[str, str]], labels: Iterable[str] | None = None) -> Hierarchy:
        """Build from ``(parent, child)`` pairs.

        Args:
            edges: the pairs; parents point to children.
            labels: the column order. Defaults to the order of first appearance in ``edges`` (parent before
                child). Labels in no edge must be listed here.
        """
        edge_list = [tuple(e) for e in edges]
        if labels is None:
            order: dict[str, None] = {}
            for edge in edge_list:
                for name in edge:
                    if isinstance(name, Hashable):
                        order.setdefault(name, None)  # type: ignore[arg-type]
            labels = list(order)
        return cls(labels, edge_list)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Iterable[str]], labels: Iterable[str] | None = None) -> Hierarchy:
        """Build from ``{parent: [child, ...]}``; a key with an empty list is a label without children.

        Args:
            mapping: children of each parent.
            labels: the column order. Defaults to the order of first appearance (each key, then its children).
        """
        edges: list[tuple[str, str]] = []
        order: dict[str, None] = {}
        for parent, children in mapping.items():
            if isinstance(children, str) or not isinstance(children, Iterable):
                raise TypeError(
                    f"children of {parent!r} must be a list of names, got {children!r}; "
                    f"write {{{parent!r}: [{children!r}]}} for a single child"
                )
            if isinstance(parent, Hashable):
                order.setdefault(parent, None)
            for child in children:
                edges.append((parent, child))
                if isinstance(child, Hashable):
                    order.setdefault(child, None)
        return cls(list(order) if labels is None else labels, edges)

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph[Any], labels: Iterable[str] | None = None) -> Hierarchy:
        """Build from a ``networkx.DiGraph`` whose edges point parent → child.

        Args:
            graph: the directed graph; every node becomes a label.
            labels: the column order. Defaults to ``graph.nodes`` order. Must name every node of the graph.
        """
        import networkx as nx

        if not isinstance(graph, nx.DiGraph) or isinstance(graph, nx.MultiDiGraph):
            raise TypeError(f"expected a networkx.DiGraph with edges parent → child, got {type(graph).__name__}")
        nodes = list(graph.nodes)
        if labels is None:
            labels = nodes
        else:
            labels = list(labels)
            missing = [n for n in nodes if n not in set(labels)]
            if missing:
                raise ValueError(f"graph nodes missing from `labels`: {missing[:10]!r}")
        return cls(labels, list(graph.edges))

    def to_networkx(self) -> nx.DiGraph[str]:
        """Return a new ``networkx.DiGraph`` with nodes in label order and edges parent → child."""
        import networkx as nx

        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self._labels)
        graph.add_edges_from(self._edges)
        return graph

    def to_dict(self) -> dict[str, list[str]]:
        """Return ``{label: [children]}`` for every label (leaves map to ``[]``), in label order."""
        return {label: list(self.children(label)) for label in self._labels}

    def to_json(self, **kwargs: Any) -> str:
        """Serialise as ``{"labels": [...], "edges": [[parent, child], ...]}``; kwargs go to ``json.dumps``."""
        return json.dumps({"labels": list(self._labels), "edges": [list(e) for e in self._edges]}, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Hierarchy:
        """Inverse of :meth:`to_json`. Raises ``ValueError`` naming what is missing or malformed."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"hierarchy JSON is not valid JSON: {err}") from None
        if not isinstance(data, dict) or "labels" not in data or "edges" not in data:
            raise ValueError('hierarchy JSON must be an object with keys "labels" and "edges"')
        if not isinstance(data["labels"], list) or not isinstance(data["edges"], list):
            raise ValueError('hierarchy JSON: "labels" and "edges" must be lists')
        return cls(data["labels"], [tuple(e) if isinstance(e, list) else e for e in data["edges"]])

    # ------------------------------------------------------------------ value semantics
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Hierarchy is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Hierarchy is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Hierarchy, (self._labels, self._edges))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hierarchy):
            return NotImplemented
        return self._labels == other._labels and self._edges == other._edges

    def __hash__(self) -> int:
        return hash((self._labels, self._edges))

    def __repr__(self) -> str:
        return f"Hierarchy(num_labels={self.num_labels}, num_edges={self.num_edges})"

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    # ------------------------------------------------------------------ basic properties
    @property
    def labels(self) -> tuple[str, ...]:
        """Label names in column order."""
        return self._labels

    @property
    def num_labels(self) -> int:
        """Number of labels ``C``."""
        return len(self._labels)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """``(parent, child)`` names, sorted by ``(index(parent), index(child))``."""
        return self._edges

    @property
    def num_edges(self) -> int:
        """Number of edges ``E``."""
        return len(self._edges)

    @property
    def edge_indices(self) -> tuple[tuple[int, int], ...]:
        """``(parent_index, child_index)`` column pairs, in the order of :attr:`edges`."""
        return self._pairs

    @property
    def edge_index(self) -> Tensor:
        """``(2, E)`` long tensor of column indices: parents in row 0, children in row 1 (a new tensor)."""
        if not self._pairs:
            return torch.zeros(2, 0, dtype=torch.long)
        return torch.tensor(self._pairs, dtype=torch.long).t().contiguous()

    def index(self, label: str) -> int:
        """Column index of ``label``; ``ValueError`` if it is not a label of the hierarchy."""
        try:
            return self._index[label]
        except (KeyError, TypeError):
            raise ValueError(f"{label!r} is not a label of the hierarchy") from None

    # ------------------------------------------------------------------ structure
    @cached_property
    def _parent_lists(self) -> tuple[tuple[int, ...], ...]:
        parents: list[list[int]] = [[] for _ in self._labels]
        for p, c in self.edge_indices:
            parents[c].append(p)
        return tuple(tuple(sorted(x)) for x in parents)

    @cached_property
    def _child_lists(self) -> tuple[tuple[int, ...], ...]:
        children: list[list[int]] = [[] for _ in self._labels]
        for p, c in self.edge_indices:
            children[p].append(c)
        return tuple(tuple(sorted(x)) for x in children)

    def _check_acyclic(self) -> None:
        order = self._topological_indices()
        if len(order) == len(self._labels):
            return
        # Kahn's algorithm stalled: the remaining nodes contain a cycle; walk parents to find one.
        remaining = set(range(len(self._labels))) - set(order)
        parents = {c: [p for p, cc in self.edge_indices if cc == c and p in remaining] for c in remaining}
        node = min(remaining)
        path: list[int] = []
        position: dict[int, int] = {}
        while node not in position:
            position[node] = len(path)
            path.append(node)
            node = parents[node][0]
        cycle = [*path[position[node]:], node]
        cycle.reverse()  # parent → child direction
        names = " → ".join(repr(self._labels[i]) for i in cycle)
        raise ValueError(f"the hierarchy has a cycle: {names}")

    def _topological_indices(self) -> list[int]:
        indegree = [0] * len(self._labels)
        children: list[list[int]] = [[] for _ in self._labels]
        for p, c in self._pairs:
            indegree[c] += 1
            children[p].append(c)
        ready = [i for i, d in enumerate(indegree) if d == 0]
        order: list[int] = []
        while ready:
            ready.sort(reverse=True)
            node = ready.pop()
            order.append(node)
            for c in children[node]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    ready.append(c)
        return order

    @cached_property
    def topological_order(self) -> tuple[str, ...]:
        """Labels ordered so that every parent precedes its children (ties broken by column index)."""
        return tuple(self._labels[i] for i in self._topological_indices())

    @cached_property
    def _ancestor_array(self) -> np.ndarray:
        n = len(self._labels)
        anc = np.zeros((n, n), dtype=bool)
        for node in self._topological_indices():
            for p in self._parent_lists[node]:
                anc[node] |= anc[p]
                anc[node, p] = True
        anc.setflags(write=False)
        return anc

    def parents(self, label: str) -> tuple[str, ...]:
        """Direct parents of ``label``, in label order."""
        return tuple(self._labels[i] for i in self._parent_lists[self.index(label)])

    def children(self, label: str) -> tuple[str, ...]:
        """Direct children of ``label``, in label order."""
        return tuple(self._labels[i] for i in self._child_lists[self.index(label)])

    def ancestors(self, label: str) -> tuple[str, ...]:
        """Proper ancestors of ``label`` (all labels with a path to it), in label order."""
        row = self._ancestor_array[self.index(label)]
        return tuple(self._labels[i] for i in np.flatnonzero(row))

    def descendants(self, label: str) -> tuple[str, ...]:
        """Proper descendants of ``label`` (all labels reachable from it), in label order."""
        col = self._ancestor_array[:, self.index(label)]
        return tuple(self._labels[i] for i in np.flatnonzero(col))

    @property
    def roots(self) -> tuple[str, ...]:
        """Labels without parents (labels in no edge included), in label order."""
        return tuple(lab for lab, ps in zip(self._labels, self._parent_lists) if not ps)

    @property
    def leaves(self) -> tuple[str, ...]:
        """Labels without children (labels in no edge included), in label order."""
        return tuple(lab for lab, cs in zip(self._labels, self._child_lists) if not cs)

    @cached_property
    def depths(self) -> tuple[int, ...]:
        """Per column: length of the longest path from a root (roots have depth 0)."""
        depth = [0] * len(self._labels)
        for node in self._topological_indices():
            for c in self._child_lists[node]:
                depth[c] = max(depth[c], depth[node] + 1)
        return tuple(depth)

    @cached_property
    def heights(self) -> tuple[int, ...]:
        """Per column: length of the longest path down to a leaf (leaves have height 0)."""
        height = [0] * len(self._labels)
        for node in reversed(self._topological_indices()):
            for p in self._parent_lists[node]:
                height[p] = max(height[p], height[node] + 1)
        return tuple(height)

    def depth(self, label: str) -> int:
        """Length of the longest path from a root to ``label``; roots have depth 0.

        On a DAG the longest path is used so that ``depth(child) > depth(parent)`` for every edge.
        """
        return self.depths[self.index(label)]

    def closure(self) -> Hierarchy:
        """A new hierarchy over the same labels whose edges are all (ancestor, descendant) pairs."""
        desc_idx, anc_idx = np.nonzero(self._ancestor_array)
        edges = [(self._labels[a], self._labels[d]) for a, d in zip(anc_idx.tolist(), desc_idx.tolist())]
        return Hierarchy(self._labels, edges)

    def ancestor_matrix(self) -> Tensor:
        """Bool ``(C, C)`` tensor; ``[i, j]`` is True when label ``j`` is a proper ancestor of label ``i``."""
        return torch.from_numpy(self._ancestor_array.copy())

    # ------------------------------------------------------------------ propagation
    @overload
    def propagate(self, y: np.ndarray) -> np.ndarray: ...
    @overload
    def propagate(self, y: Tensor) -> Tensor: ...
    @overload
    def propagate(self, y: pd.DataFrame) -> pd.DataFrame: ...

    def propagate(self, y: Any) -> Any:
        """Apply the true-path rule: every ancestor of a positive label becomes positive.

        Args:
            y: ``(N, C)`` or ``(C,)`` 0/1 labels (bool, integer or float) as a NumPy array or a torch tensor (which
                stays on its device), or a pandas DataFrame whose columns include every label (matched by name, in
                any order; other columns are returned untouched).

        Returns:
            The same type, shape and dtype as ``y``; positives are only ever added.

        Raises:
            ValueError: if a value is not 0 or 1 (naming the column and the value), or the shape does not match.
        """
        if isinstance(y, Tensor):
            return self._propagate_tensor(y)
        if isinstance(y, np.ndarray):
            return self._propagate_tensor(torch.from_numpy(np.ascontiguousarray(y))).numpy()
        import pandas as pd

        if isinstance(y, pd.DataFrame):
            missing = [lab for lab in self._labels if lab not in y.columns]
            if missing:
                raise ValueError(f"DataFrame is missing hierarchy label columns: {missing!r}")
            values = self.propagate(y.loc[:, list(self._labels)].to_numpy())
            out = y.copy()
            for j, lab in enumerate(self._labels):
                out[lab] = values[:, j].astype(y[lab].dtype, copy=False)
            return out
        raise TypeError(f"propagate expects a numpy array, torch tensor or pandas DataFrame, got {type(y).__name__}")

    def _propagate_tensor(self, y: Tensor) -> Tensor:
        if y.ndim not in (1, 2) or y.shape[-1] != self.num_labels:
            raise ValueError(f"Expected labels of shape (N, {self.num_labels}) or ({self.num_labels},), "
                             f"got {tuple(y.shape)}")
        if y.dtype != torch.bool:
            bad = (y != 0) & (y != 1)
            if bool(bad.any()):
                rows, cols = torch.nonzero(bad.reshape(-1, self.num_labels), as_tuple=True)
                col = int(cols[0])
                value = y.reshape(-1, self.num_labels)[int(rows[0]), col].item()
                raise ValueError(f"column {self._labels[col]!r} holds {value!r}; propagate expects 0/1 labels "
                                 f"({int(bad.sum())} such values in all)")
        positive = (y != 0).to(torch.uint8)
        plan = PropagationPlan.upward(self, y.device)
        closed = propagate_levels(positive, plan.source, plan.target, plan.sizes, plan.reduce)
        if y.dtype == torch.bool:
            return closed.bool()
        return closed.to(y.dtype)
