"""Tests for hierloss.edge_weights: counts and estimators against brute force, inputs, policies, distributed."""

from __future__ import annotations

import contextlib
import gc
import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.datasets import CHEXPERT_OBSERVATIONS, chexpert_hierarchy, chexpert_targets
from hierloss.edge_weights import (
    BetaWeight,
    ConditionalWeight,
    EdgeWeights,
    FixedWeight,
    count_edges,
)
from tests._distributed import free_port, init_gloo, spawn_two
from tests.test_hierarchy import random_dags

EPS = 1e-6


def _brute_force(h: Hierarchy, y: np.ndarray, known: np.ndarray | None = None) -> dict[tuple[str, str], tuple]:
    """Per edge, loop over rows: (n, n_parent_neg, n_violation, reference weight)."""
    out = {}
    for p, c in h.edges:
        i, j = h.index(p), h.index(c)
        n = neg = vio = 0
        for r in range(y.shape[0]):
            if known is not None and not (known[r, i] and known[r, j]):
                continue
            n += 1
            if y[r, i] == 0:
                neg += 1
                if y[r, j] == 1:
                    vio += 1
        out[(p, c)] = (n, neg, vio, 1 - (vio + EPS) / (neg + 2 * EPS))
    return out


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node."""
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": []})


def _random_labels(h: Hierarchy, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, h.num_labels)) < 0.4).astype(np.int64)


def test_conditional_matches_brute_force(dag: Hierarchy) -> None:
    """Counts and weights equal a per-row, per-edge loop and the reference formula."""
    y = _random_labels(dag, 200, 0)
    pen = ConditionalWeight().fit(dag, y)
    table = pen.table()
    want = _brute_force(dag, y)
    for k, (p, c) in enumerate(dag.edges):
        n, neg, vio, w = want[(p, c)]
        row = table.iloc[k]
        assert (row["parent"], row["child"]) == (p, c)
        assert (row["n"], row["n_parent_neg"], row["n_violation"]) == (n, neg, vio)
        assert row["weight"] == w  # float64, same formula: identical
        assert row["p_violation"] == pytest.approx(vio / neg)
    assert pen.values.dtype == torch.float32
    torch.testing.assert_close(pen.values, torch.tensor([want[e][3] for e in dag.edges], dtype=torch.float32))


def test_input_types_agree(dag: Hierarchy) -> None:
    """NumPy, torch (int/bool/float), DataFrame (shuffled + extra columns), sparse and chunk iterables agree."""
    y = _random_labels(dag, 300, 1)
    want = ConditionalWeight().fit(dag, y).values
    frame = pd.DataFrame(y, columns=list(dag.labels))[["e", "d", "c", "b", "a"]]
    frame["extra"] = "x"
    inputs = [
        torch.from_numpy(y), torch.from_numpy(y).bool(), torch.from_numpy(y).float(), y.astype(np.float32),
        frame, scipy.sparse.csr_matrix(y), [y[:100], torch.from_numpy(y[100:250]), frame.iloc[250:]],
        (chunk for chunk in np.array_split(y, 7)),
    ]
    for labels in inputs:
        assert torch.equal(ConditionalWeight().fit(dag, labels).values, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_counts_across_tiles_and_blocks(dag: Hierarchy, dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row-major arrays are transposed tile by tile and counted block by block: with small tiles and blocks (several
    of each, the last ones partial) the counts equal numpy's, and an invalid value in a later block is still named."""
    from hierloss import edge_weights as edge_weights_module

    monkeypatch.setattr(edge_weights_module, "_TILE_ROWS", 7)
    monkeypatch.setattr(edge_weights_module, "_CHUNK_ROWS", 64)
    y = np.ascontiguousarray(_random_labels(dag, 300, 5).astype(dtype))
    counts = count_edges(dag, y)
    for k, (p, c) in enumerate(dag.edges):
        parent, child = y[:, dag.index(p)], y[:, dag.index(c)]
        assert int(counts.n[k]) == 300
        assert int(counts.n_parent_neg[k]) == int((parent == 0).sum())
        assert int(counts.n_violation[k]) == int(((parent == 0) & (child == 1)).sum())
    y[250, dag.index("c")] = 2
    with pytest.raises(ValueError, match="column 'c' holds 2"):
        count_edges(dag, y)


def test_edge_cases_never_nan(dag: Hierarchy) -> None:
    """A parent never negative gives 0.5, a never-violated edge ≈ 1, all rows ignored gives 0.5."""
    y = np.zeros((10, dag.num_labels))
    y[:, dag.index("a")] = 1
    pen = ConditionalWeight().fit(dag, y)
    vals = dict(zip(dag.edges, pen.values.tolist()))
    assert vals[("a", "b")] == pytest.approx(0.5) and vals[("a", "c")] == pytest.approx(0.5)
    assert vals[("b", "d")] == pytest.approx(1.0, abs=1e-6)
    y2 = y.copy()
    y2[:, dag.index("d")] = np.nan
    pen2 = ConditionalWeight().fit(dag, y2, uncertain="ignore")
    vals2 = dict(zip(dag.edges, pen2.values.tolist()))
    assert vals2[("b", "d")] == pytest.approx(0.5) and vals2[("c", "d")] == pytest.approx(0.5)
    assert not torch.isnan(pen2.values).any()
    assert pen2.table()["n"].tolist()[2:] == [0, 0]


def test_uncertain_policies(dag: Hierarchy) -> None:
    """'zeros'/'ones' map -1 and NaN; 'ignore' drops the row from every edge touching that column."""
    y = _random_labels(dag, 100, 2).astype(np.float64)
    y[3, dag.index("b")] = -1
    y[7, dag.index("d")] = np.nan
    zeros = y.copy()
    zeros[3, dag.index("b")] = 0
    zeros[7, dag.index("d")] = 0
    ones = y.copy()
    ones[3, dag.index("b")] = 1
    ones[7, dag.index("d")] = 1
    assert torch.equal(ConditionalWeight().fit(dag, y, uncertain="zeros").values,
                       ConditionalWeight().fit(dag, zeros).values)
    assert torch.equal(ConditionalWeight().fit(dag, y, uncertain="ones").values,
                       ConditionalWeight().fit(dag, ones).values)
    known = ~(np.isnan(y) | (y == -1))
    table = ConditionalWeight().fit(dag, y, uncertain="ignore").table()
    want = _brute_force(dag, np.nan_to_num(y), known)
    for k, e in enumerate(dag.edges):
        assert tuple(table.iloc[k][["n", "n_parent_neg", "n_violation"]]) == want[e][:3]
        assert table.iloc[k]["weight"] == want[e][3]


def test_errors_name_the_offender(dag: Hierarchy) -> None:
    """Uncertain without policy, bad values, bad policy, missing columns, shapes and empty input are named."""
    y = np.zeros((5, dag.num_labels))
    y[0, dag.index("c")] = -1
    y[1, dag.index("c")] = np.nan
    with pytest.raises(ValueError, match=r"column 'c' holds 1 uncertain \(-1\) and 1 missing \(NaN\) values; pass"):
        ConditionalWeight().fit(dag, y)
    y2 = np.zeros((5, dag.num_labels))
    y2[4, dag.index("d")] = 2
    with pytest.raises(ValueError, match=r"column 'd' holds 2\.0; labels must be 0 or 1"):
        ConditionalWeight().fit(dag, y2, uncertain="zeros")
    with pytest.raises(ValueError, match="column 'b' holds 7; labels must be 0 or 1"):
        ConditionalWeight().fit(dag, torch.tensor([[0, 7, 0, 0, 0]]))
    with pytest.raises(ValueError, match="uncertain must be None, 'zeros', 'ones' or 'ignore', got 'drop'"):
        ConditionalWeight().fit(dag, y, uncertain="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing hierarchy columns \['e'\]"):
        ConditionalWeight().fit(dag, pd.DataFrame(0, index=[0], columns=["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match=r"column 'a' holds the non-numeric value 'yes'"):
        ConditionalWeight().fit(dag, pd.DataFrame({"a": ["yes"], "b": [0], "c": [0], "d": [0], "e": [0]}))
    with pytest.raises(ValueError, match=r"Expected labels of shape \(N, 5\), got \(3, 4\)"):
        ConditionalWeight().fit(dag, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="the label matrix is empty"):
        ConditionalWeight().fit(dag, np.zeros((0, 5)))
    with pytest.raises(ValueError, match="the label matrix is empty"):
        ConditionalWeight().fit(dag, [])
    with pytest.raises(TypeError, match="got str"):
        ConditionalWeight().fit(dag, "labels.csv")


def test_estimator_argument_errors() -> None:
    """Estimator parameters are validated with the bad value quoted."""
    with pytest.raises(ValueError, match="smoothing must be a positive finite number, got 0"):
        ConditionalWeight(0)
    with pytest.raises(ValueError, match="strength must be a positive finite number, got -1"):
        BetaWeight(-1)
    with pytest.raises(ValueError, match=r"prior_mean must be in \[0, 1\] or None, got 1\.5"):
        BetaWeight(prior_mean=1.5)
    with pytest.raises(ValueError, match="value must be a finite number >= 0, got nan"):
        FixedWeight(float("nan"))
    with pytest.raises(ValueError, match=r"prior_mean must be in \[0, 1\] or None, got nan"):
        BetaWeight(prior_mean=float("nan"))


def test_fixed_weight_ignores_labels(dag: Hierarchy) -> None:
    """FixedWeight gives β on every edge and has no counts in its table."""
    pen = FixedWeight(0.3).fit(dag)
    assert pen.values.tolist() == pytest.approx([0.3] * dag.num_edges)
    assert pen.counts is None and pen.table()["n"].isna().all()


def test_beta_weight_formula(dag: Hierarchy) -> None:
    """BetaWeight equals 1 − (v + α·m)/(neg + α) with m the pooled violation rate (written out by hand)."""
    y = _random_labels(dag, 150, 3)
    bf = _brute_force(dag, y)
    m = sum(v[2] for v in bf.values()) / sum(v[1] for v in bf.values())
    want = [1 - (bf[e][2] + 5 * m) / (bf[e][1] + 5) for e in dag.edges]
    got = BetaWeight(strength=5).fit(dag, y).table()["weight"].tolist()
    assert got == pytest.approx(want, rel=1e-12)
    laplace = BetaWeight(strength=2, prior_mean=0.5).fit(dag, y).table()["weight"].tolist()
    assert laplace == pytest.approx([1 - (bf[e][2] + 1) / (bf[e][1] + 2) for e in dag.edges], rel=1e-12)


def test_edge_weights_round_trip_and_validation(dag: Hierarchy) -> None:
    """to_dict/from_dict (via JSON) round trip; wrong length and non-finite values are rejected."""
    pen = ConditionalWeight().fit(dag, _random_labels(dag, 50, 4))
    back = EdgeWeights.from_dict(json.loads(json.dumps(pen.to_dict())))
    assert back == pen and back.table().equals(pen.table())
    assert back.as_mapping() == pen.as_mapping()
    with pytest.raises(ValueError, match=r"Expected 4 edge weights \(one per edge\), got shape \(3,\)"):
        EdgeWeights(dag, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"weight of edge \('b', 'd'\) is nan"):
        EdgeWeights(dag, [0.1, 0.2, float("nan"), 0.3])
    with pytest.raises(ValueError, match="missing key 'weights'"):
        EdgeWeights.from_dict({"hierarchy": {}})


@settings(max_examples=30, deadline=None)
@given(random_dags(max_labels=8), st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_properties(h: Hierarchy, seed: int, n: int) -> None:
    """In [0, 1], row-order invariant, chunked == whole, equal to brute force, never-violated edges ≈ 1."""
    y = _random_labels(h, n, seed)
    pen = ConditionalWeight().fit(h, y)
    vals = pen.values
    assert bool(((vals >= 0) & (vals <= 1)).all())
    perm = np.random.default_rng(seed).permutation(n)
    assert torch.equal(ConditionalWeight().fit(h, y[perm]).values, vals)
    assert torch.equal(ConditionalWeight().fit(h, np.array_split(y, 3)).values, vals)
    bf = _brute_force(h, y)
    for k, e in enumerate(h.edges):
        assert pen.table()["weight"].iloc[k] == bf[e][3]
        if bf[e][2] == 0 and bf[e][1] > 0:
            assert float(vals[k]) == pytest.approx(1.0, abs=2e-6)  # 1 − ε/(n + 2ε) ≥ 1 − 1e-6, float32


def test_real_chexpert_labeler(shared_data: Path) -> None:
    """On CheXpert's labeler output (with -1 and blanks) the policies behave as documented."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_labeler.csv")
    obs = frame[list(CHEXPERT_OBSERVATIONS)]
    assert (obs == -1).any().any() and obs.isna().any().any()
    zeros = frame.copy()
    zeros[list(CHEXPERT_OBSERVATIONS)] = obs.fillna(0).replace(-1, 0)
    h = chexpert_hierarchy()
    targets = chexpert_targets(zeros)
    pen = ConditionalWeight().fit(h, targets)
    table = pen.table()
    assert (table["n"] == 500).all()
    # The labeler marks 'No Finding' with support devices: Abnormal → Other is violated in the data.
    row = table[(table.parent == "Abnormal") & (table.child == "Other")].iloc[0]
    assert row["n_violation"] > 0 and row["weight"] < 1
    bf = _brute_force(h, targets[list(h.labels)].to_numpy())
    assert table["weight"].tolist() == [bf[e][3] for e in h.edges]


def test_real_nih(shared_data: Path) -> None:
    """On the NIH ChestX-ray14 test labels (25,596 rows) the counts equal a brute-force pandas count."""
    frame = pd.read_csv(shared_data / "nih" / "test_labels.csv")
    h = Hierarchy.from_dict({"Effusion": ["Pleural_Thickening"], "Infiltration": ["Pneumonia", "Consolidation"],
                             "Mass": ["Nodule"], "No Finding": []})
    pen = ConditionalWeight().fit(h, frame)
    for k, (p, c) in enumerate(h.edges):
        neg = frame[frame[p] == 0]
        assert pen.table()["n_parent_neg"].iloc[k] == len(neg)
        assert pen.table()["n_violation"].iloc[k] == int((neg[c] == 1).sum())
    assert pen.table()["n"].tolist() == [len(frame)] * h.num_edges



def _worker(rank: int, port: int, y: np.ndarray, out_dir: str) -> None:
    init_gloo(rank, port, timeout_s=60)
    try:
        h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": []})
        part = np.array_split(y, 2)[rank]
        pen = ConditionalWeight().fit(h, part, process_group=dist.group.WORLD)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(pen.to_dict()))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_distributed_equals_single_process(dag: Hierarchy, tmp_path: Path) -> None:
    """Two gloo ranks fitting on halves get exactly the weights of one process on the union."""
    y = _random_labels(dag, 101, 5)
    spawn_two(_worker, free_port(), y, str(tmp_path))
    want = ConditionalWeight().fit(dag, y)
    for rank in range(2):
        got = EdgeWeights.from_dict(json.loads((tmp_path / f"rank{rank}.json").read_text()))
        assert got == want
        assert got.table().equals(want.table())


def test_dataframe_columns_in_reverse_order(dag: Hierarchy) -> None:
    """A one-block float64 frame whose columns are the labels reversed counts like the array in label order."""
    y = _random_labels(dag, 60, 6).astype(np.float64)
    frame = pd.DataFrame(np.ascontiguousarray(y[:, ::-1]), columns=list(dag.labels)[::-1])
    assert torch.equal(ConditionalWeight().fit(dag, frame).values, ConditionalWeight().fit(dag, y).values)
    assert count_edges(dag, frame).n_violation.tolist() == [_brute_force(dag, y)[e][2] for e in dag.edges]


def test_nullable_columns(dag: Hierarchy) -> None:
    """Nullable Int64 / boolean / Float64 columns count like NumPy; <NA> is a missing value named with its column."""
    y = _random_labels(dag, 40, 7)
    frame = pd.DataFrame({lab: pd.array(y[:, j], dtype="Int64") for j, lab in enumerate(dag.labels)})
    want = ConditionalWeight().fit(dag, y).values
    assert torch.equal(ConditionalWeight().fit(dag, frame).values, want)
    assert torch.equal(ConditionalWeight().fit(dag, frame.astype("boolean")).values, want)
    assert torch.equal(ConditionalWeight().fit(dag, frame.astype("Float64")).values, want)
    frame.loc[[2, 5], "c"] = pd.NA
    with pytest.raises(ValueError, match=r"column 'c' holds 0 uncertain \(-1\) and 2 missing \(NaN\) values; pass "
                                         r"uncertain='zeros', 'ones' or 'ignore'"):
        ConditionalWeight().fit(dag, frame)
    known = np.ones_like(y, dtype=bool)
    known[[2, 5], dag.index("c")] = False
    table = ConditionalWeight().fit(dag, frame, uncertain="ignore").table()
    want_counts = _brute_force(dag, y, known)
    assert [tuple(table.iloc[k][["n", "n_parent_neg", "n_violation"]]) for k in range(dag.num_edges)] == \
        [want_counts[e][:3] for e in dag.edges]


def test_nested_lists_are_a_matrix(dag: Hierarchy) -> None:
    """A list of rows (Python lists of numbers) is read as one (N, C) matrix; ragged or non-numeric rows are named."""
    y = _random_labels(dag, 30, 8)
    want = ConditionalWeight().fit(dag, y).values
    assert torch.equal(ConditionalWeight().fit(dag, y.tolist()).values, want)
    assert torch.equal(ConditionalWeight().fit(dag, y.astype(float).tolist()).values, want)
    assert torch.equal(ConditionalWeight().fit(dag, [tuple(row) for row in y.tolist()]).values, want)
    with pytest.raises(ValueError, match=r"labels row 1 has 4 values, row 0 has 5"):
        ConditionalWeight().fit(dag, [[0, 1, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"labels row 1, column 'b' holds the non-numeric value 'yes'"):
        ConditionalWeight().fit(dag, [[0, 1, 0, 0, 0], [0, "yes", 0, 0, 0]])
    with pytest.raises(ValueError, match=r"Expected labels of shape \(N, 5\), got \(5,\)"):
        ConditionalWeight().fit(dag, [0, 1, 0, 0, 0])


@pytest.mark.parametrize(("make", "name"), [
    (lambda v: ConditionalWeight(smoothing=v), "smoothing"),
    (lambda v: BetaWeight(strength=v), "strength"),
    (lambda v: BetaWeight(prior_mean=v), "prior_mean"),
    (lambda v: FixedWeight(v), "value"),
])
def test_estimator_arguments_must_be_numbers(make: Any, name: str) -> None:
    """Booleans and strings are refused with a TypeError, not read as 1.0 / 0.0; NumPy numbers are accepted."""
    for bad in (True, False, "0.5", None if name != "prior_mean" else "x"):
        with pytest.raises(TypeError, match=rf"{name} must be a number, got {type(bad).__name__}"):
            make(bad)
    make(np.float32(0.5))
    make(np.int64(1)) if name != "prior_mean" else make(np.int64(0))


def test_beta_weight_without_negative_parents(dag: Hierarchy) -> None:
    """With no parent ever 0 the pooled prior rate falls back to m = 0.5, so every edge gets 0.5 (documented)."""
    y = np.ones((12, dag.num_labels))
    assert BetaWeight().fit(dag, y).values.tolist() == [0.5] * dag.num_edges
    assert BetaWeight(prior_mean=0.2).fit(dag, y).values.tolist() == pytest.approx([0.8] * dag.num_edges)


SHARD_SPLITS = {  # rows of the 101 labels on (rank 0, rank 1), and how rank 1 passes its shard
    "rank1_empty_array": (slice(0, 101), slice(101, 101), "array"),
    "rank0_empty_frame": (slice(0, 0), slice(0, 101), "frame"),
    "rank1_no_chunks": (slice(0, 101), slice(0, 0), "no_chunks"),
    "uneven_chunks": (slice(0, 2), slice(2, 101), "chunks"),
}


def _shard(y: np.ndarray, h: Hierarchy, rows: slice, kind: str) -> Any:
    part = y[rows]
    if kind == "frame":
        return pd.DataFrame(part, columns=list(h.labels))
    if kind == "no_chunks":
        return []
    if kind == "chunks":
        return [part[:10], torch.from_numpy(part[10:])]
    return part


def _empty_shard_worker(rank: int, port: int, y: np.ndarray, out_dir: str) -> None:
    init_gloo(rank, port, timeout_s=20)
    try:
        h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": []})
        results: dict[str, Any] = {}
        for name, (*rows, kind) in SHARD_SPLITS.items():
            pen = ConditionalWeight().fit(h, _shard(y, h, rows[rank], kind if rank == 1 else "array"),
                                           process_group=dist.group.WORLD)
            results[name] = pen.to_dict()
        for name, shard in {"both_empty": np.zeros((0, 5)),
                            "bad_value_on_rank0": np.full((3, 5), 2 if rank == 0 else 0)}.items():
            try:
                ConditionalWeight().fit(h, shard, process_group=dist.group.WORLD)
            except ValueError as err:
                results[name] = str(err)
        # the failed call keeps nothing alive (a frame <-> traceback cycle would hold the labels and the group
        # until a garbage-collector pass, and a group destroyed only at exit aborts the process)
        gc.disable()
        try:
            bad = torch.full((3, 5), 2 if rank == 0 else 0)
            alive = weakref.ref(bad)
            with contextlib.suppress(ValueError):  # not pytest.raises: its ExceptionInfo keeps the frames alive
                ConditionalWeight().fit(h, bad, process_group=dist.group.WORLD)
            del bad
            results["labels_freed_after_error"] = alive() is None
        finally:
            gc.enable()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_distributed_empty_and_uneven_shards(dag: Hierarchy, tmp_path: Path) -> None:
    """Ranks with no rows (array, frame, no chunks) or few rows get the single-process weights of the union;
    if every rank is empty, or one rank's labels are invalid, every rank raises instead of waiting for the others."""
    y = _random_labels(dag, 101, 9)
    spawn_two(_empty_shard_worker, free_port(), y, str(tmp_path))
    want = ConditionalWeight().fit(dag, y)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in SHARD_SPLITS:
            back = EdgeWeights.from_dict(got[name])
            assert back == want and back.table().equals(want.table()), (name, rank)
        assert "the label matrix is empty (0 rows on every rank)" in got["both_empty"]
    assert "column 'a' holds 2" in got_rank(tmp_path, 0)["bad_value_on_rank0"]
    assert "rank 0 of the process group could not count its labels" in got_rank(tmp_path, 1)["bad_value_on_rank0"]
    assert got_rank(tmp_path, 0)["labels_freed_after_error"] and got_rank(tmp_path, 1)["labels_freed_after_error"]


def got_rank(tmp_path: Path, rank: int) -> dict[str, Any]:
    """The results rank ``rank`` wrote."""
    return dict(json.loads((tmp_path / f"rank{rank}.json").read_text()))
