"""Tests for hierloss.hierarchy: constructors, queries, propagation and validation errors."""

from __future__ import annotations

import itertools
import json
import pickle
import tracemalloc
from collections.abc import Callable, Iterable

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy


@st.composite
def random_dags(draw: st.DrawFn, max_labels: int = 12) -> Hierarchy:
    """A random DAG: labels in a random order, edges only from earlier to later positions of a hidden order."""
    n = draw(st.integers(1, max_labels))
    hidden = draw(st.permutations(range(n)))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=2 * n)) if pairs else []
    labels = [f"L{k}" for k in range(n)]
    edges = [(labels[hidden[i]], labels[hidden[j]]) for i, j in chosen]
    order = draw(st.permutations(labels))
    return Hierarchy(order, edges)


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node and an isolated label."""
    return Hierarchy.from_dict(
        {"A": ["B", "C"], "B": ["D"], "C": ["D", "E"], "Iso": []},
    )


def _graph(h: Hierarchy) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(h.labels)
    g.add_edges_from(h.edges)
    return g


def _naive_propagate(h: Hierarchy, y: np.ndarray) -> np.ndarray:
    g = _graph(h)
    out = y.copy()
    for r in range(y.shape[0]):
        for j, lab in enumerate(h.labels):
            if y[r, j]:
                for a in nx.ancestors(g, lab):
                    out[r, h.index(a)] = 1
    return out


# ---------------------------------------------------------------- construction
def test_from_dict_orders_by_first_appearance(dag: Hierarchy) -> None:
    """Without `labels`, columns follow the order of first appearance in the dict."""
    assert dag.labels == ("A", "B", "C", "D", "E", "Iso")
    assert dag.num_labels == 6
    assert dag.edges == (("A", "B"), ("A", "C"), ("B", "D"), ("C", "D"), ("C", "E"))
    assert dag.num_edges == 5


def test_explicit_labels_fix_column_order() -> None:
    """`labels` fixes the column order and may hold labels in no edge."""
    h = Hierarchy.from_edges([("p", "c")], labels=["c", "x", "p"])
    assert h.labels == ("c", "x", "p")
    assert h.edge_index.tolist() == [[2], [0]]


def test_edges_are_canonically_sorted() -> None:
    """Edges given in any order come out sorted by (parent column, child column)."""
    a = Hierarchy.from_edges([("b", "c"), ("a", "c"), ("a", "b")], labels=["a", "b", "c"])
    b = Hierarchy.from_edges([("a", "b"), ("a", "c"), ("b", "c")], labels=["a", "b", "c"])
    assert a.edges == (("a", "b"), ("a", "c"), ("b", "c"))
    assert a == b and hash(a) == hash(b)


def test_edge_index_matches_edges(dag: Hierarchy) -> None:
    """`edge_index` has parents in row 0 and children in row 1, in the order of `edges`."""
    ei = dag.edge_index
    assert ei.dtype == torch.long and ei.shape == (2, dag.num_edges)
    assert [(dag.labels[p], dag.labels[c]) for p, c in ei.t().tolist()] == list(dag.edges)


def test_empty_edge_index_shape() -> None:
    """A hierarchy without edges has a (2, 0) edge_index."""
    h = Hierarchy(["a", "b"])
    assert h.edge_index.shape == (2, 0)
    assert h.roots == ("a", "b") and h.leaves == ("a", "b")


def test_from_networkx_multi_parent() -> None:
    """A networkx DAG with a multi-parent node converts with its node order and edges."""
    g = nx.DiGraph()
    g.add_nodes_from(["root", "x", "y", "z", "lonely"])
    g.add_edges_from([("root", "x"), ("root", "y"), ("x", "z"), ("y", "z")])
    h = Hierarchy.from_networkx(g)
    assert h.labels == ("root", "x", "y", "z", "lonely")
    assert h.parents("z") == ("x", "y")
    assert nx.utils.graphs_equal(h.to_networkx(), g)


def test_round_trips(dag: Hierarchy) -> None:
    """json, dict, networkx and pickle round trips give an equal hierarchy."""
    assert Hierarchy.from_json(dag.to_json()) == dag
    assert Hierarchy.from_dict(dag.to_dict()) == dag
    assert Hierarchy.from_networkx(dag.to_networkx()) == dag
    clone = pickle.loads(pickle.dumps(dag))
    assert clone == dag and hash(clone) == hash(dag)
    assert clone.ancestors("D") == dag.ancestors("D")


def test_immutable(dag: Hierarchy) -> None:
    """Attributes cannot be set or deleted."""
    with pytest.raises(AttributeError, match="immutable"):
        dag.labels = ("x",)  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del dag._labels


def test_stays_a_pure_value_after_use(dag: Hierarchy) -> None:
    """Using a hierarchy (propagation, functional max/min, coherent projection, every module) leaves no tensor,
    plan or device cache on it: it stays an immutable graph whose state is labels, edges and plain Python values."""
    from hierloss import HBCELoss, HierarchyPenalty, MaxConstraint, MCLoss
    from hierloss.functional import max_over_descendants, mc_loss, min_over_ancestors
    from hierloss.metrics import coherent

    y = torch.tensor([[0, 0, 0, 1, 0, 0]]).float()
    dag.propagate(y)
    dag.propagate(y.numpy())
    max_over_descendants(y, dag)
    min_over_ancestors(y, dag)
    coherent(y, dag)
    mc_loss(y, y, dag)
    for module in (HBCELoss(dag), HierarchyPenalty(dag), MaxConstraint(dag), MCLoss(dag)):
        module.double()

    def holds_tensors(value: object) -> bool:
        if isinstance(value, torch.Tensor):
            return True
        if isinstance(value, (tuple, list, set, frozenset)):
            return any(holds_tensors(v) for v in value)
        if isinstance(value, dict):
            return any(holds_tensors(k) or holds_tensors(v) for k, v in value.items())
        return hasattr(value, "__dict__") and not isinstance(value, type) and holds_tensors(vars(value))

    offenders = [name for name, value in vars(dag).items() if holds_tensors(value)]
    assert offenders == []
    assert not hasattr(dag, "upward_plan") and not hasattr(dag, "downward_plan")


def test_equality_depends_on_label_order() -> None:
    """The same edges with another label order are a different hierarchy."""
    a = Hierarchy(["a", "b"], [("a", "b")])
    b = Hierarchy(["b", "a"], [("a", "b")])
    assert a != b
    assert a != "not a hierarchy"


# ---------------------------------------------------------------- queries
def test_queries_against_networkx(dag: Hierarchy) -> None:
    """parents/children/ancestors/descendants agree with networkx."""
    g = _graph(dag)
    for lab in dag.labels:
        assert set(dag.parents(lab)) == set(g.predecessors(lab))
        assert set(dag.children(lab)) == set(g.successors(lab))
        assert set(dag.ancestors(lab)) == nx.ancestors(g, lab)
        assert set(dag.descendants(lab)) == nx.descendants(g, lab)
    assert dag.roots == ("A", "Iso")
    assert dag.leaves == ("D", "E", "Iso")
    assert dag.ancestors("D") == ("A", "B", "C")


def test_depth_is_longest_path_from_a_root() -> None:
    """On a DAG, depth is the longest path from a root, so a child is always deeper than its parents."""
    h = Hierarchy.from_dict({"r": ["a", "c"], "a": ["b"], "b": ["c"]})
    assert [h.depth(x) for x in ("r", "a", "b", "c")] == [0, 1, 2, 3]
    for p, c in h.edges:
        assert h.depth(c) > h.depth(p)


def test_index_and_unknown_label(dag: Hierarchy) -> None:
    """`index` maps names to columns and names an unknown label in its error."""
    assert dag.index("C") == 2
    assert "C" in dag and "Z" not in dag
    with pytest.raises(ValueError, match="'Z' is not a label of the hierarchy"):
        dag.index("Z")
    with pytest.raises(ValueError, match="'Z' is not a label"):
        dag.ancestors("Z")


def test_ancestor_matrix(dag: Hierarchy) -> None:
    """ancestor_matrix()[i, j] is True exactly when label j is a proper ancestor of label i."""
    m = dag.ancestor_matrix()
    assert m.dtype == torch.bool and m.shape == (6, 6)
    g = _graph(dag)
    for i, a in enumerate(dag.labels):
        for j, b in enumerate(dag.labels):
            assert bool(m[i, j]) == (b in nx.ancestors(g, a))


def test_closure_is_transitive_closure(dag: Hierarchy) -> None:
    """closure() has exactly the edges of networkx's transitive closure, same labels."""
    c = dag.closure()
    assert c.labels == dag.labels
    assert set(c.edges) == set(nx.transitive_closure_dag(_graph(dag)).edges)


def test_topological_order(dag: Hierarchy) -> None:
    """Every parent precedes its children in topological_order."""
    pos = {lab: i for i, lab in enumerate(dag.topological_order)}
    assert sorted(pos) == sorted(dag.labels)
    assert all(pos[p] < pos[c] for p, c in dag.edges)


def test_topological_order_breaks_ties_by_column_index() -> None:
    """Among labels whose parents are all placed, the lowest column comes first (networkx's lexicographic order)."""
    h = Hierarchy(["z", "b", "a", "c", "iso"], [("c", "a"), ("z", "b"), ("c", "b")])
    assert h.topological_order == ("z", "c", "b", "a", "iso")


def test_ancestor_matrix_sparse(dag: Hierarchy) -> None:
    """ancestor_matrix(sparse=True) is a coalesced bool COO tensor holding exactly the dense matrix's True entries."""
    s = dag.ancestor_matrix(sparse=True)
    assert s.layout == torch.sparse_coo and s.is_coalesced() and s.dtype == torch.bool and s.shape == (6, 6)
    g = _graph(dag)
    want = sorted((dag.index(d), dag.index(a)) for d in dag.labels for a in nx.ancestors(g, d))
    assert [tuple(ij) for ij in s.indices().t().tolist()] == want
    assert bool(s.values().all())


def test_ancestor_matrix_sparse_without_edges() -> None:
    """A hierarchy without edges has an empty (C, C) sparse ancestor matrix."""
    s = Hierarchy(["a", "b", "c"]).ancestor_matrix(sparse=True)
    assert s.shape == (3, 3) and s.indices().shape == (2, 0) and s.dtype == torch.bool


def test_closure_size_and_order() -> None:
    """closure() keeps the labels and holds one edge per (ancestor, descendant) pair, in canonical order."""
    h = Hierarchy.from_edges([("c", "b"), ("b", "a"), ("c", "d")], labels=["a", "b", "c", "d"])
    assert h.closure().edges == (("b", "a"), ("c", "a"), ("c", "b"), ("c", "d"))
    assert h.closure().closure() == h.closure()


def _traced_peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (as tracemalloc sees Python and NumPy allocations) while fn() runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", ["star", "chain"])
def test_queries_on_20k_labels_allocate_no_dense_matrix(shape: str) -> None:
    """On 20,000 labels, ancestors/descendants (and, on a star, closure and the sparse ancestor matrix) peak far
    below one dense C x C bool array (400 MB): they walk the graph instead of filling a matrix."""
    c = 20_000
    names = [f"n{i}" for i in range(c)]
    edges = [(names[0], n) for n in names[1:]] if shape == "star" else list(itertools.pairwise(names))
    h = Hierarchy(names, edges)
    bound = c * c // 10
    found: dict[str, int] = {}

    def walk() -> None:
        found["ancestors"] = len(h.ancestors(names[-1]))
        found["descendants"] = len(h.descendants(names[0]))

    assert _traced_peak(walk) < bound
    assert found == {"ancestors": 1 if shape == "star" else c - 1, "descendants": c - 1}
    if shape == "star":

        def pairs() -> None:
            found["closure"] = h.closure().num_edges
            found["sparse"] = h.ancestor_matrix(sparse=True).indices().shape[1]

        assert _traced_peak(pairs) < bound
        assert found["closure"] == found["sparse"] == c - 1


def test_depth_on_a_long_chain() -> None:
    """A 20,000-label chain builds and answers depth and ancestor queries without recursion limits."""
    names = [f"n{i}" for i in range(20_000)]
    h = Hierarchy(names, list(itertools.pairwise(names)))
    assert h.depth(names[-1]) == 19_999 and h.heights[0] == 19_999
    assert h.ancestors(names[3]) == tuple(names[:3])
    assert h.topological_order == tuple(names)


# ---------------------------------------------------------------- propagate
def test_propagate_numpy_matches_naive_loop(dag: Hierarchy) -> None:
    """propagate on a NumPy matrix equals a per-row loop over ancestors and keeps the dtype."""
    rng = np.random.default_rng(0)
    y = (rng.random((50, dag.num_labels)) < 0.2).astype(np.int32)
    out = dag.propagate(y)
    assert out.dtype == np.int32 and out.shape == y.shape
    np.testing.assert_array_equal(out, _naive_propagate(dag, y))


def test_propagate_tensor_bool_float_and_1d(dag: Hierarchy) -> None:
    """Tensors keep dtype and device; 1-D label vectors work."""
    y = torch.zeros(dag.num_labels)
    y[dag.index("D")] = 1
    out = dag.propagate(y)
    assert out.dtype == torch.float32
    assert out.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    b = dag.propagate(y.bool().unsqueeze(0))
    assert b.dtype == torch.bool and b.tolist() == [[True, True, True, True, False, False]]


def test_propagate_dataframe_matches_columns_by_name(dag: Hierarchy) -> None:
    """DataFrame columns are matched by name in any order; other columns are untouched."""
    frame = pd.DataFrame({"E": [1, 0], "note": ["x", "y"], "Iso": [0, 1], "D": [0, 0], "C": [0, 0],
                          "B": [0, 0], "A": [0, 0]})
    out = dag.propagate(frame)
    assert list(out.columns) == list(frame.columns)
    assert out["note"].tolist() == ["x", "y"]
    assert out.loc[0, ["A", "C", "E"]].tolist() == [1, 1, 1]
    assert out.loc[0, ["B", "D", "Iso"]].tolist() == [0, 0, 0]
    assert out.loc[1].drop("note").tolist() == [0, 1, 0, 0, 0, 0]
    assert frame["A"].tolist() == [0, 0]  # input not modified


def test_propagate_errors(dag: Hierarchy) -> None:
    """Non-0/1 values, wrong shapes, missing columns and unsupported types are named in the error."""
    y = np.zeros((2, dag.num_labels))
    y[1, dag.index("C")] = -1
    with pytest.raises(ValueError, match=r"column 'C' holds -1\.0; propagate expects 0/1 labels \(1 such"):
        dag.propagate(y)
    with pytest.raises(ValueError, match=r"Expected labels of shape \(N, 6\) or \(6,\), got \(2, 5\)"):
        dag.propagate(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"missing hierarchy label columns: \['Iso'\]"):
        dag.propagate(pd.DataFrame({lab: [0] for lab in dag.labels[:-1]}))
    with pytest.raises(TypeError, match="got list"):
        dag.propagate([[0] * 6])  # type: ignore[call-overload]


def test_propagate_nullable_column_with_missing_values_is_named(dag: Hierarchy) -> None:
    """A nullable Int64 column holding <NA> is a ValueError naming the column and saying it holds missing values."""
    frame = pd.DataFrame({lab: pd.array([0, 0, 0], dtype="Int64") for lab in dag.labels})
    frame["C"] = pd.array([0, None, None], dtype="Int64")
    with pytest.raises(ValueError, match=r"column 'C' holds missing values \(<NA>\) in 2 of 3 rows"):
        dag.propagate(frame)


def test_propagate_nullable_columns_without_missing_values(dag: Hierarchy) -> None:
    """Nullable Int64 / boolean columns without <NA> propagate like plain ones and keep their dtypes."""
    rng = np.random.default_rng(1)
    y = (rng.random((20, dag.num_labels)) < 0.3).astype(np.int64)
    frame = pd.DataFrame({lab: pd.array(y[:, j], dtype="Int64") for j, lab in enumerate(dag.labels)})
    frame["B"] = pd.array(y[:, dag.index("B")].astype(bool), dtype="boolean")
    out = dag.propagate(frame)
    assert list(out.dtypes) == list(frame.dtypes)
    np.testing.assert_array_equal(out.astype("int64").to_numpy(), _naive_propagate(dag, y))


def test_propagate_object_column_is_named(dag: Hierarchy) -> None:
    """A column of strings is a TypeError naming the column and its dtype."""
    frame = pd.DataFrame({lab: [0, 1] for lab in dag.labels})
    frame["D"] = pd.Series(["yes", "no"], dtype=object)
    with pytest.raises(TypeError, match=r"column 'D' has dtype object; propagate expects 0/1 labels"):
        dag.propagate(frame)


# ---------------------------------------------------------------- validation errors
def test_cycle_is_named() -> None:
    """A cycle raises a ValueError that lists the nodes of the cycle in edge direction."""
    with pytest.raises(ValueError, match="the hierarchy has a cycle: 'b' → 'c' → 'd' → 'b'"):
        Hierarchy.from_edges([("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")])


def test_self_loop() -> None:
    """A self-loop is rejected by name."""
    with pytest.raises(ValueError, match=r"edge \('a', 'a'\) is a self-loop"):
        Hierarchy(["a"], [("a", "a")])


def test_duplicate_label_and_edge() -> None:
    """Duplicate labels and duplicate edges are rejected, never silently merged."""
    with pytest.raises(ValueError, match="duplicate label 'a' at positions 0 and 2"):
        Hierarchy(["a", "b", "a"])
    with pytest.raises(ValueError, match=r"duplicate edge \('a', 'b'\)"):
        Hierarchy(["a", "b"], [("a", "b"), ("a", "b")])


def test_unknown_label_in_edge() -> None:
    """An edge naming a label outside `labels` names the edge and the label."""
    with pytest.raises(ValueError, match=r"edge \('Cardiac', 'Cardiomegaly'\): 'Cardiomegaly' is not a label"):
        Hierarchy.from_edges([("Cardiac", "Cardiomegaly")], labels=["Cardiac"])


def test_bad_names() -> None:
    """Empty and non-string names are rejected with their position or edge."""
    with pytest.raises(ValueError, match="label names must be non-empty, got ''"):
        Hierarchy(["a", ""])
    with pytest.raises(ValueError, match="label names must be non-empty, got '  '"):
        Hierarchy.from_edges([("a", "  ")])
    with pytest.raises(TypeError, match="label at position 1: label names must be strings, got 3 of type int"):
        Hierarchy(["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="`labels` must be a sequence of names"):
        Hierarchy("abc")
    with pytest.raises(TypeError, match="edges must be \\(parent, child\\) pairs, got 'ab'"):
        Hierarchy(["a", "b"], ["ab"])  # type: ignore[list-item]


def test_from_dict_string_children() -> None:
    """A single child given as a string (not a list) is a TypeError that shows the fix."""
    with pytest.raises(TypeError, match=r"children of 'A' must be a list of names, got 'B'"):
        Hierarchy.from_dict({"A": "B"})  # type: ignore[dict-item]


def test_from_networkx_errors() -> None:
    """Undirected graphs and labels missing graph nodes are rejected."""
    with pytest.raises(TypeError, match=r"expected a networkx\.DiGraph"):
        Hierarchy.from_networkx(nx.Graph([("a", "b")]))  # type: ignore[arg-type]
    g = nx.DiGraph([("a", "b")])
    with pytest.raises(ValueError, match=r"graph nodes missing from `labels`: \['b'\]"):
        Hierarchy.from_networkx(g, labels=["a"])


def test_from_json_errors() -> None:
    """Malformed JSON is reported as a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match="not valid JSON"):
        Hierarchy.from_json("{")
    with pytest.raises(ValueError, match='keys "labels" and "edges"'):
        Hierarchy.from_json(json.dumps({"labels": []}))
    with pytest.raises(ValueError, match="must be lists"):
        Hierarchy.from_json(json.dumps({"labels": "a", "edges": []}))


# ---------------------------------------------------------------- properties on random DAGs
@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_closure_is_transitive_and_matches_networkx(h: Hierarchy) -> None:
    """The closure's edge set is transitive and equals networkx's transitive closure."""
    c = set(h.closure().edges)
    assert c == set(nx.transitive_closure_dag(_graph(h)).edges)
    for a, b in c:
        for b2, d in c:
            if b == b2:
                assert (a, d) in c


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1))
def test_propagate_idempotent_never_lowers(h: Hierarchy, seed: int) -> None:
    """propagate never lowers a label, is idempotent, and equals the naive loop."""
    rng = np.random.default_rng(seed)
    y = (rng.random((7, h.num_labels)) < 0.3).astype(np.int64)
    out = h.propagate(y)
    assert (out >= y).all()
    np.testing.assert_array_equal(h.propagate(out), out)
    np.testing.assert_array_equal(out, _naive_propagate(h, y))


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_ancestors_descendants_are_duals(h: Hierarchy) -> None:
    """a is an ancestor of d exactly when d is a descendant of a; parents/children likewise."""
    for a in h.labels:
        for d in h.descendants(a):
            assert a in h.ancestors(d)
        for c in h.children(a):
            assert a in h.parents(c)
    for d in h.labels:
        for a in h.ancestors(d):
            assert d in h.descendants(a)


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_structure_matches_networkx_random(h: Hierarchy) -> None:
    """Ancestors, descendants, both ancestor matrices, the topological order, depths and heights agree with
    networkx (depth and height as naive recursions over its predecessors / successors)."""
    g = _graph(h)
    dense = h.ancestor_matrix()
    assert torch.equal(h.ancestor_matrix(sparse=True).to_dense(), dense)
    for i, lab in enumerate(h.labels):
        assert h.ancestors(lab) == tuple(x for x in h.labels if x in nx.ancestors(g, lab))
        assert h.descendants(lab) == tuple(x for x in h.labels if x in nx.descendants(g, lab))
        assert {h.labels[j] for j in torch.nonzero(dense[i]).flatten().tolist()} == nx.ancestors(g, lab)
    assert h.topological_order == tuple(nx.lexicographical_topological_sort(g, key=h.index))

    def longest(lab: str, step: Callable[[str], Iterable[str]]) -> int:
        return max((1 + longest(x, step) for x in step(lab)), default=0)

    assert h.depths == tuple(longest(lab, g.predecessors) for lab in h.labels)
    assert h.heights == tuple(longest(lab, g.successors) for lab in h.labels)


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.data())
def test_named_cycle_is_a_cycle_of_the_edges(h: Hierarchy, data: st.DataObject) -> None:
    """Adding a back edge to a DAG makes the constructor name a cycle whose consecutive labels are edges."""
    pairs = [(a, d) for d in h.labels for a in h.ancestors(d)]
    if not pairs:
        return
    ancestor, descendant = data.draw(st.sampled_from(pairs))
    edges = [*h.edges, (descendant, ancestor)]
    with pytest.raises(ValueError, match="the hierarchy has a cycle: ") as info:
        Hierarchy(h.labels, edges)
    named = [part.strip("'") for part in str(info.value).split(": ", 1)[1].split(" → ")]
    assert named[0] == named[-1] and len(set(named)) == len(named) - 1
    assert all(edge in set(edges) for edge in itertools.pairwise(named))


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_round_trips_random(h: Hierarchy) -> None:
    """networkx, json, dict and pickle round trips preserve equality on random DAGs."""
    assert Hierarchy.from_networkx(h.to_networkx()) == h
    assert Hierarchy.from_json(h.to_json()) == h
    assert Hierarchy.from_dict(h.to_dict(), labels=h.labels) == h
    assert pickle.loads(pickle.dumps(h)) == h
