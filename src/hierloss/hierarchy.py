"""The label hierarchy: a validated, immutable DAG over the columns of a label matrix."""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

from hierloss._validation import check_unique_columns
from hierloss.propagation import LevelPlan, closure_max

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


def _edge_code(edge: object, index: dict[str, int], seen: set[int]) -> int:
    """Check one edge in full, raising the error that names what is wrong; return its new code parent·C + child."""
    if isinstance(edge, str) or not isinstance(edge, Sequence) or len(edge) != 2:
        raise TypeError(f"edges must be (parent, child) pairs, got {edge!r}")
    parent = _check_name(edge[0], f"edge {tuple(edge)!r}")
    child = _check_name(edge[1], f"edge {tuple(edge)!r}")
    for name in (parent, child):
        if name not in index:
            raise ValueError(f"edge {(parent, child)!r}: {name!r} is not a label of the hierarchy")
    if parent == child:
        raise ValueError(f"edge {(parent, child)!r} is a self-loop")
    code = index[parent] * len(index) + index[child]
    if code in seen:
        raise ValueError(f"duplicate edge {(parent, child)!r}")
    seen.add(code)
    return code


def _group(flat: list[int], counts: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """Split ``flat`` into consecutive tuples of lengths ``counts``."""
    ends = np.cumsum(counts).tolist()
    return tuple(tuple(flat[start:end]) for start, end in zip([0, *ends[:-1]], ends))


class Hierarchy:
    """A directed acyclic graph of labels; edges point parent → child.

    ``labels`` fixes the column order of every label matrix and model output used with this hierarchy. A node
    may have several parents (DAGs are first-class) and a label may belong to no edge at all (CheXpert's
    'No Finding'). Edges are kept in a canonical order, sorted by ``(index(parent), index(child))``, which is
    the order of :attr:`edges`, :attr:`edge_index` and every per-edge tensor in hierloss.

    Instances are immutable, hashable and picklable; two hierarchies are equal when they have the same labels in
    the same order and the same edges.

    Size: a hierarchy holds ``O(C + E)`` memory and builds in ``O((C + E) log(C + E))`` time (validation and the cycle
    check included), so the whole Gene Ontology is an ordinary input. Queries walk the graph and cost what they
    return; only :meth:`ancestor_matrix` (dense by default) and :meth:`closure` grow with the number of
    (ancestor, descendant) pairs.

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

    # The state: labels, their column index, and the edges as an (E, 2) read-only int64 array of columns sorted by
    # (parent, child). Python tuples of edges (edges, edge_indices) are derived on first use.
    _labels: tuple[str, ...]
    _index: dict[str, int]
    _pair_array: np.ndarray
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
        # One pass over the edges; a well-formed edge costs two dict look-ups, and any other goes through
        # _edge_code, which raises the error naming it. Pairs are kept as codes parent·C + child.
        num_labels = len(label_tuple)
        lookup = index.get
        codes: list[int] = []
        seen: set[int] = set()
        for edge in edges:
            if type(edge) in (tuple, list) and len(edge) == 2:
                parent, child = edge
                p = lookup(parent) if type(parent) is str else None
                c = lookup(child) if type(child) is str else None
                if p is not None and c is not None and p != c:
                    code = p * num_labels + c
                    if code not in seen:
                        seen.add(code)
                        codes.append(code)
                        continue
            codes.append(_edge_code(edge, index, seen))
        sorted_codes = np.sort(np.fromiter(codes, dtype=np.int64, count=len(codes)))
        parents, children = np.divmod(sorted_codes, max(num_labels, 1))
        self._set_state(label_tuple, index, parents, children)
        self._check_acyclic()
        object.__setattr__(self, "_frozen", True)

    def _set_state(self, labels: tuple[str, ...], index: dict[str, int], parents: np.ndarray,
                   children: np.ndarray) -> None:
        """Store the labels and the edges given as parent and child columns sorted by (parent, child)."""
        pair_array = np.stack([parents, children], axis=1).astype(np.int64, copy=False)
        pair_array.setflags(write=False)
        object.__setattr__(self, "_labels", labels)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_pair_array", pair_array)

    @classmethod
    def _trusted(cls, labels: tuple[str, ...], index: dict[str, int], parents: np.ndarray,
                 children: np.ndarray) -> Hierarchy:
        """A hierarchy from edges known to be valid, unique, sorted and acyclic (e.g. a closure): no checks."""
        h = cls.__new__(cls)
        h._set_state(labels, index, parents, children)
        object.__setattr__(h, "_frozen", True)
        return h

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
            known = set(labels)
            missing = [n for n in nodes if n not in known]
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
        return self._labels == other._labels and np.array_equal(self._pair_array, other._pair_array)

    def __hash__(self) -> int:
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash((self._labels, self._pair_array.tobytes()))

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
        return len(self._pair_array)

    @property
    def edge_indices(self) -> tuple[tuple[int, int], ...]:
        """``(parent_index, child_index)`` column pairs, in the order of :attr:`edges`."""
        return self._pairs

    @cached_property
    def _pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self._pair_array[:, 0].tolist(), self._pair_array[:, 1].tolist()))

    @cached_property
    def _edges(self) -> tuple[tuple[str, str], ...]:
        name = self._labels.__getitem__
        return tuple(zip(map(name, self._pair_array[:, 0].tolist()), map(name, self._pair_array[:, 1].tolist())))

    @property
    def edge_index(self) -> Tensor:
        """``(2, E)`` long tensor of column indices: parents in row 0, children in row 1 (a new tensor)."""
        return torch.from_numpy(self._pair_array.T.copy())

    def index(self, label: str) -> int:
        """Column index of ``label``; ``ValueError`` if it is not a label of the hierarchy."""
        try:
            return self._index[label]
        except (KeyError, TypeError):
            raise ValueError(f"{label!r} is not a label of the hierarchy") from None

    # ------------------------------------------------------------------ structure
    # Every structural query walks the parent/child lists: O(C + E) time and memory, never a (C, C) array.
    @cached_property
    def _parent_lists(self) -> tuple[tuple[int, ...], ...]:
        children = self._pair_array[:, 1]
        order = np.argsort(children, kind="stable")  # stable: each child's parents stay in ascending order
        return _group(self._pair_array[order, 0].tolist(), np.bincount(children, minlength=len(self._labels)))

    @cached_property
    def _child_lists(self) -> tuple[tuple[int, ...], ...]:
        pairs = self._pair_array  # sorted by (parent, child): grouped by parent, children ascending
        return _group(pairs[:, 1].tolist(), np.bincount(pairs[:, 0], minlength=len(self._labels)))

    @cached_property
    def _topological_indices(self) -> tuple[int, ...]:
        """Kahn's algorithm taking the lowest ready column first (a heap); shorter than C on a cycle."""
        indegree = [len(ps) for ps in self._parent_lists]
        children = self._child_lists
        ready = [i for i, d in enumerate(indegree) if d == 0]  # ascending, hence already a heap
        order: list[int] = []
        while ready:
            node = heapq.heappop(ready)
            order.append(node)
            for c in children[node]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    heapq.heappush(ready, c)
        return tuple(order)

    def _check_acyclic(self) -> None:
        order = self._topological_indices
        if len(order) == len(self._labels):
            return
        # Kahn's algorithm stalled: every remaining node has a remaining parent; walk lowest parents to a cycle.
        remaining = bytearray([1]) * len(self._labels)
        for i in order:
            remaining[i] = 0
        parents = self._parent_lists
        node = remaining.index(1)
        path: list[int] = []
        position: dict[int, int] = {}
        while node not in position:
            position[node] = len(path)
            path.append(node)
            node = next(p for p in parents[node] if remaining[p])
        cycle = [*path[position[node]:], node]
        cycle.reverse()  # parent → child direction
        names = " → ".join(repr(self._labels[i]) for i in cycle)
        raise ValueError(f"the hierarchy has a cycle: {names}")

    @cached_property
    def topological_order(self) -> tuple[str, ...]:
        """Labels ordered so that every parent precedes its children (ties broken by column index)."""
        return tuple(self._labels[i] for i in self._topological_indices)

    def _reachable(self, start: int, neighbours: tuple[tuple[int, ...], ...]) -> list[int]:
        """Columns reachable from ``start`` (excluded) through ``neighbours``, ascending: an iterative walk."""
        seen: set[int] = set()
        stack = list(neighbours[start])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(neighbours[node])
        return sorted(seen)

    def _ancestor_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(descendant, ancestor)`` int64 columns of every proper-ancestor pair, sorted by (descendant, ancestor).

        One sorted int32 array of ancestors per label, each the union of its parents and their arrays, filled in
        topological order: time and memory proportional to the number of pairs ``K`` (plus ``O(C)`` arrays).
        """
        n = len(self._labels)
        parents = self._parent_lists
        empty = np.zeros(0, dtype=np.int32)
        ancestors: list[np.ndarray] = [empty] * n
        for node in self._topological_indices:
            ps = parents[node]
            if len(ps) == 1:  # one parent p, not among its own ancestors: insert it in sorted position
                p = ps[0]
                above = ancestors[p]
                cut = int(above.searchsorted(p))
                ancestors[node] = np.concatenate((above[:cut], np.array([p], dtype=np.int32), above[cut:]))
            elif ps:
                ancestors[node] = np.unique(np.concatenate([np.array(ps, dtype=np.int32),
                                                            *(ancestors[p] for p in ps)]))
        counts = np.fromiter((a.size for a in ancestors), dtype=np.int64, count=n)
        rows = np.repeat(np.arange(n, dtype=np.int64), counts)
        cols = np.concatenate(ancestors).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
        return rows, cols  # rows ascending (labels in column order), each row's ancestors ascending

    def parents(self, label: str) -> tuple[str, ...]:
        """Direct parents of ``label``, in label order."""
        return tuple(self._labels[i] for i in self._parent_lists[self.index(label)])

    def children(self, label: str) -> tuple[str, ...]:
        """Direct children of ``label``, in label order."""
        return tuple(self._labels[i] for i in self._child_lists[self.index(label)])

    def ancestors(self, label: str) -> tuple[str, ...]:
        """Proper ancestors of ``label`` (all labels with a path to it), in label order.

        A walk up the parent lists: time proportional to the ancestors and the edges between them.
        """
        return tuple(self._labels[i] for i in self._reachable(self.index(label), self._parent_lists))

    def descendants(self, label: str) -> tuple[str, ...]:
        """Proper descendants of ``label`` (all labels reachable from it), in label order.

        A walk down the child lists: time proportional to the descendants and the edges between them.
        """
        return tuple(self._labels[i] for i in self._reachable(self.index(label), self._child_lists))

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
        parents = self._parent_lists
        for node in self._topological_indices:
            ps = parents[node]
            if ps:
                depth[node] = 1 + max(depth[p] for p in ps)
        return tuple(depth)

    @cached_property
    def heights(self) -> tuple[int, ...]:
        """Per column: length of the longest path down to a leaf (leaves have height 0)."""
        height = [0] * len(self._labels)
        children = self._child_lists
        for node in reversed(self._topological_indices):
            cs = children[node]
            if cs:
                height[node] = 1 + max(height[c] for c in cs)
        return tuple(height)

    def depth(self, label: str) -> int:
        """Length of the longest path from a root to ``label``; roots have depth 0.

        On a DAG the longest path is used so that ``depth(child) > depth(parent)`` for every edge.
        """
        return self.depths[self.index(label)]

    def closure(self) -> Hierarchy:
        """A new hierarchy over the same labels whose edges are all (ancestor, descendant) pairs.

        Its size is the number ``K`` of such pairs, the sum over labels of their ancestor counts: at most
        ``C·depth`` on a tree, ``C·(C−1)/2`` on a chain. Time and memory are proportional to ``K`` (computed from
        the parent lists, never through a dense ``(C, C)`` array).
        """
        descendant, ancestor = self._ancestor_pairs()
        order = np.argsort(ancestor, kind="stable")  # by ancestor, then (stable) by descendant
        return Hierarchy._trusted(self._labels, self._index, ancestor[order], descendant[order])

    def ancestor_matrix(self, *, sparse: bool = False) -> Tensor:
        """``(C, C)`` bool tensor; ``[i, j]`` is True when label ``j`` is a proper ancestor of label ``i``.

        Args:
            sparse: return a coalesced ``torch.sparse_coo`` tensor holding only the ``K`` True entries (indices
                sorted by ``(i, j)``; ``K`` as in :meth:`closure`): ``O(C + K)`` memory. The default is a dense
                tensor of ``C²`` bytes (10 GB at 100,000 labels): ask for it only on small hierarchies.
        """
        rows, cols = self._ancestor_pairs()
        n = len(self._labels)
        if sparse:
            indices = torch.from_numpy(np.stack([rows, cols]))
            return torch.sparse_coo_tensor(indices, torch.ones(rows.size, dtype=torch.bool, device="cpu"), (n, n),
                                           is_coalesced=True, check_invariants=False)
        dense = torch.zeros(n, n, dtype=torch.bool, device="cpu")
        dense[torch.from_numpy(rows), torch.from_numpy(cols)] = True
        return dense

    # ------------------------------------------------------------------ propagation
    @overload
    def propagate(self, labels: np.ndarray) -> np.ndarray: ...
    @overload
    def propagate(self, labels: Tensor) -> Tensor: ...
    @overload
    def propagate(self, labels: pd.DataFrame) -> pd.DataFrame: ...

    def propagate(self, labels: Any) -> Any:
        """Apply the true-path rule: every ancestor of a positive label becomes positive.

        Args:
            labels: ``(N, C)`` or ``(C,)`` 0/1 labels (bool, integer or float) as a NumPy array or a torch tensor
                (which stays on its device), or a pandas DataFrame whose columns include every label once (matched by
                name, in any order; other columns are returned untouched). Nullable pandas columns (``Int64``,
                ``boolean``, ...) are accepted when they hold no missing value.

        Returns:
            The same type, shape and dtype as ``labels`` (each DataFrame column keeps its dtype); positives are only
            ever added.

        Raises:
            ValueError: if a value is not 0 or 1 (naming the column and the value), a DataFrame column holds missing
                values (``<NA>``; naming the column), a DataFrame holds a label column more than once (naming it),
                or the shape does not match.
            TypeError: if ``labels`` is of another type, or a label column of a DataFrame has a dtype other than
                bool, integer or float (naming the column).
        """
        if isinstance(labels, Tensor):
            return self._propagate_tensor(labels)
        if isinstance(labels, np.ndarray):
            # torch warns on (and must not share) a read-only array: such an array is copied, never written
            array = np.ascontiguousarray(labels) if labels.flags.writeable else np.array(labels, order="C")
            return self._propagate_tensor(torch.from_numpy(array)).numpy()
        import pandas as pd

        if isinstance(labels, pd.DataFrame):
            missing = [lab for lab in self._labels if lab not in labels.columns]
            if missing:
                raise ValueError(f"DataFrame is missing hierarchy label columns: {missing!r}")
            check_unique_columns(labels.columns, self._labels, "DataFrame", "propagate needs")
            frame = labels.loc[:, list(self._labels)]
            values = self.propagate(self._frame_values(frame))
            out = labels.copy()
            for j, (lab, dtype) in enumerate(zip(self._labels, frame.dtypes)):
                column = values[:, j]
                out[lab] = column.astype(dtype, copy=False) if isinstance(dtype, np.dtype) else (
                    pd.array(column).astype(dtype))
            return out
        raise TypeError("propagate expects a numpy array, torch tensor or pandas DataFrame, got "
                        f"{type(labels).__name__}")

    def _frame_values(self, frame: pd.DataFrame) -> np.ndarray:
        """The label columns of ``frame`` (in label order) as one NumPy array of a bool, integer or float dtype.

        Nullable (extension) columns are converted to their NumPy dtype once they are known to hold no missing
        value; a missing value or a column of another dtype is an error naming the column.
        """
        values = frame.to_numpy()
        if values.dtype != object:
            return values
        dtypes: list[np.dtype[Any]] = []
        for j, dtype in enumerate(frame.dtypes):
            numpy_dtype = dtype if isinstance(dtype, np.dtype) else getattr(dtype, "numpy_dtype", None)
            if not isinstance(numpy_dtype, np.dtype) or numpy_dtype.kind not in "biuf":
                numpy_dtype = None
            if numpy_dtype is None or not isinstance(dtype, np.dtype):
                missing = np.flatnonzero(frame.iloc[:, j].isna().to_numpy())
                if missing.size:
                    raise ValueError(f"column {self._labels[j]!r} holds missing values "
                                     f"({frame.iloc[int(missing[0]), j]!r}) in {missing.size} of {len(frame)} rows; "
                                     f"propagate expects 0/1 labels: fill them (e.g. with 0) or drop those rows first")
            if numpy_dtype is None:
                raise TypeError(f"column {self._labels[j]!r} has dtype {dtype}; propagate expects 0/1 labels of a "
                                f"bool, integer or float dtype")
            dtypes.append(numpy_dtype)
        return frame.to_numpy(dtype=np.result_type(*dtypes))

    def _propagate_tensor(self, y: Tensor) -> Tensor:
        if y.ndim not in (1, 2) or y.shape[-1] != self.num_labels:
            raise ValueError(f"Expected labels of shape (N, {self.num_labels}) or ({self.num_labels},), "
                             f"got {tuple(y.shape)}")
        nonzero = y != 0
        if y.dtype != torch.bool:
            bad = nonzero & (y != 1)
            if bool(bad.any()):
                rows, cols = torch.nonzero(bad.reshape(math.prod(y.shape[:-1]), self.num_labels), as_tuple=True)
                col = int(cols[0])
                value = y.reshape(math.prod(y.shape[:-1]), self.num_labels)[int(rows[0]), col].item()
                raise ValueError(f"column {self._labels[col]!r} holds {value!r}; propagate expects 0/1 labels "
                                 f"({int(bad.sum())} such values in all)")
        positive = nonzero.to(torch.uint8)
        closed = closure_max(positive, LevelPlan.build(self, "descendants", y.device))
        if y.dtype == torch.bool:
            return closed.bool()
        return closed.to(y.dtype)


def check_hierarchy(hierarchy: Any, *, optional: bool = False) -> Any:
    """``hierarchy`` itself if it is a :class:`Hierarchy` (or ``None`` with ``optional=True``); a ``TypeError`` naming
    what came otherwise. The one check of every function and module that takes a hierarchy."""
    if isinstance(hierarchy, Hierarchy) or (optional and hierarchy is None):
        return hierarchy
    expected = "a Hierarchy or None" if optional else "a Hierarchy"
    raise TypeError(f"Expected {expected}, got {type(hierarchy).__name__}")
