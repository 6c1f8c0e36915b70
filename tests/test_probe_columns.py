"""Probe-suite tests for repeated label columns and exact logit thresholds: each reproduces one defect first."""

from __future__ import annotations

import json
import math
import warnings
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from hierloss import Hierarchy
from hierloss.cli import main
from hierloss.datasets import chexpert_hierarchy, chexpert_targets
from hierloss.edge_weights import BetaWeight, ConditionalWeight, EdgeWeights, count_edges
from hierloss.metrics import HierarchicalF1, hierarchical_prf

# ---------------------------------------------------------------------------------------------- repeated columns


def _frame(columns: list[str]) -> pd.DataFrame:
    """Three rows of 0/1 labels under the given (possibly repeated) column names."""
    rows = [[0, 1, 0, 1], [1, 1, 1, 0], [0, 0, 1, 1]]
    frame: pd.DataFrame = pd.DataFrame([row[:len(columns)] for row in rows], columns=columns)
    return frame


@pytest.mark.parametrize(
    "fit",
    [
        lambda h, frame: count_edges(h, frame),
        lambda h, frame: ConditionalWeight().fit(h, frame),
        lambda h, frame: BetaWeight().fit(h, frame),
        lambda h, frame: ConditionalWeight().fit(h, iter([frame])),
    ],
    ids=["count_edges", "ConditionalWeight", "BetaWeight", "chunks"],
)
def test_repeated_label_column_is_named(fit: object) -> None:
    """A DataFrame holding a label column twice is refused naming the column, by count_edges and every estimator."""
    h = Hierarchy.from_edges([("a", "b")])
    with pytest.raises(ValueError, match=r"^label DataFrame has the label column 'b' 2 times; edge weights need each "
                                         r"label column once$"):
        fit(h, _frame(["a", "b", "b"]))  # type: ignore[operator]


def test_repeated_label_columns_are_all_named() -> None:
    """Several repeated label columns are named together, in hierarchy order."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    with pytest.raises(ValueError, match=r"^label DataFrame has the label columns \['a', 'b'\] more than once; edge "
                                         r"weights need each label column once$"):
        count_edges(h, _frame(["b", "a", "b", "a"]).assign(c=0))


def test_repeated_other_column_is_ignored() -> None:
    """A repeated column that is not a label is ignored, like any extra column: the counts are those without it."""
    h = Hierarchy.from_edges([("a", "b")])
    frame = _frame(["a", "id", "b", "id"])
    got = count_edges(h, frame)
    want = count_edges(h, frame[["a", "b"]].to_numpy())
    assert [t.tolist() for t in (got.n, got.n_parent_neg, got.n_violation)] == [
        t.tolist() for t in (want.n, want.n_parent_neg, want.n_violation)]


def _one_line_error(err: str) -> str:
    """Check that stderr is exactly one `hierloss edge-weights: error:` line and return it."""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("hierloss edge-weights: error: "), err
    return err


def test_cli_repeated_label_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-weights` on a CSV whose header names a label twice exits 2 naming it (pandas would read `a.1`)."""
    hierarchy = tmp_path / "h.json"
    hierarchy.write_text(Hierarchy.from_dict({"a": ["b"]}).to_json())
    path = tmp_path / "y.csv"
    path.write_text("a,b,a\n0,1,1\n0,0,1\n1,1,1\n")
    assert main(["edge-weights", str(path), "--hierarchy", str(hierarchy)]) == 2
    captured = capsys.readouterr()
    assert _one_line_error(captured.err) == (
        f"hierloss edge-weights: error: {path}: the header has the label column 'a' 2 times (columns 1 and 3); edge "
        "weights need each label column once\n")
    assert captured.out == ""


def test_cli_repeated_chexpert_observation_is_refused(shared_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """With --hierarchy chexpert, raw observations named twice in the header are refused, naming each and where."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_groundtruth.csv")
    columns = list(frame.columns)
    path = tmp_path / "raw.csv"
    pd.concat([frame, 1 - frame[["Edema", "Fracture"]]], axis=1).to_csv(path, index=False)
    assert main(["edge-weights", str(path), "--hierarchy", "chexpert"]) == 2
    edema, fracture = columns.index("Edema") + 1, columns.index("Fracture") + 1
    assert _one_line_error(capsys.readouterr().err) == (
        f"hierloss edge-weights: error: {path}: the header has the label columns ['Edema', 'Fracture'] more than "
        f"once ('Edema' in columns {edema} and {len(columns) + 1}; 'Fracture' in columns {fracture} and "
        f"{len(columns) + 2}); edge weights need each label column once\n")


def test_cli_repeated_derived_chexpert_column_is_refused(shared_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A derived CheXpert label ('Other') named twice beside the raw observations is refused too."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_groundtruth.csv")
    path = tmp_path / "raw.csv"
    text = frame.to_csv(index=False).splitlines()
    text = [text[0] + ",Other,Other"] + [line + ",0,1" for line in text[1:]]
    path.write_text("\n".join(text) + "\n")
    assert main(["edge-weights", str(path), "--hierarchy", "chexpert", "--uncertain", "zeros"]) == 2
    n = len(frame.columns)
    assert f"the header has the label column 'Other' 2 times (columns {n + 1} and {n + 2})" in _one_line_error(
        capsys.readouterr().err)


def test_cli_repeated_other_column_is_ignored(shared_data: Path, tmp_path: Path) -> None:
    """A repeated column that is no label ('Study' twice) is not read: the weights are those of the library."""
    src = shared_data / "chexpert" / "test_groundtruth.csv"
    frame = pd.read_csv(src)
    path, out = tmp_path / "raw.csv", tmp_path / "w.json"
    pd.concat([frame, frame[["Study"]]], axis=1).to_csv(path, index=False)
    assert main(["edge-weights", str(path), "--hierarchy", "chexpert", "--out", str(out)]) == 0
    want = ConditionalWeight().fit(chexpert_hierarchy(), chexpert_targets(frame))
    assert EdgeWeights.from_dict(json.loads(out.read_text())) == want


# ---------------------------------------------------------------------------------------------- logits in hP/hR/hF


def _exact_above(x: float, threshold: float) -> bool:
    """Whether the exact sigmoid of the float ``x`` is above the exact ``threshold`` (60-digit decimals)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return 1 / (1 + (-Decimal(x)).exp()) > Decimal(threshold)


def _float32_neighbours(centre: float, steps: int = 3) -> list[float]:
    """The float32 numbers within ``steps`` ulps of the float32 nearest ``centre``."""
    x = np.float32(centre)
    below, above = [x], [x]
    for _ in range(steps):
        below.append(np.nextafter(below[-1], np.float32(-np.inf)))
        above.append(np.nextafter(above[-1], np.float32(np.inf)))
    return sorted({float(v) for v in below + above})


def _edge_logits(threshold: float) -> list[float]:
    """Float32 logits hard to judge against ``threshold``: those nearest ``logit(threshold)`` and far ones."""
    t = Decimal(threshold)
    with localcontext() as ctx:
        ctx.prec = 60
        cut = float((t / (1 - t)).ln())
    return [*_float32_neighbours(cut), cut - 1.0, cut + 1.0, 0.0, -30.0, 30.0]


def _augmented_reference(pred: np.ndarray, y: np.ndarray, h: Hierarchy) -> tuple[np.ndarray, np.ndarray]:
    """Ancestor-closed 0/1 matrices by a loop over rows and each positive label's ancestors."""
    out = []
    for m in (pred, y):
        closed = np.zeros(m.shape, dtype=int)
        for n in range(m.shape[0]):
            for j in np.flatnonzero(m[n]):
                closed[n, j] = 1
                for a in h.ancestors(h.labels[j]):
                    closed[n, h.index(a)] = 1
        out.append(closed)
    return out[0], out[1]


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.7, 0.01, 0.999, 1 - 1e-9, 1e-9])
def test_prf_from_logits_is_exact(threshold: float) -> None:
    """hierarchical_prf and HierarchicalF1 on float32 logits equal scikit-learn on exact-decimal sigmoid decisions."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    values = _edge_logits(threshold)
    rng = np.random.default_rng(0)
    logits = np.asarray(rng.choice(values, size=(64, h.num_labels)), dtype=np.float32)
    y = (rng.random((64, h.num_labels)) < 0.4).astype(int)
    pred = np.array([[_exact_above(float(x), threshold) for x in row] for row in logits], dtype=int)
    pred_closed, y_closed = _augmented_reference(pred, y, h)
    for average in ("micro", "macro", "samples"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = precision_recall_fscore_support(y_closed, pred_closed, average=average, zero_division=0.0)[:3]
        got = hierarchical_prf(torch.from_numpy(logits), y, h, average, threshold=threshold, from_logits=True)
        assert [float(v) for v in got] == pytest.approx([float(v) for v in want], abs=1e-12)
        metric = HierarchicalF1(h, average=average, threshold=threshold, from_logits=True)
        metric.update(torch.from_numpy(logits[:30]), torch.from_numpy(y[:30]))
        metric.update(torch.from_numpy(logits[30:]), torch.from_numpy(y[30:]))
        assert [float(v) for v in metric.compute_all()] == pytest.approx([float(v) for v in want], abs=1e-12)


def test_logit_just_above_the_cut_is_predicted() -> None:
    """The float32 logit just above logit(0.3), whose float32 sigmoid rounds to 0.3, is predicted (hP = hR = 1)."""
    h = Hierarchy.from_edges([("p", "c")])
    cut = math.log(0.3) - math.log1p(-0.3)
    x = float(np.nextafter(np.float32(cut), np.float32(1)))
    assert _exact_above(x, 0.3) and not bool(torch.sigmoid(torch.tensor(x)) > 0.3)  # the defect's premise
    got = hierarchical_prf(torch.tensor([[x, -20.0]]), [[1, 0]], h, threshold=0.3, from_logits=True)
    assert [float(v) for v in got] == [1.0, 1.0, 1.0]


def test_large_logits_straddling_the_cut_are_told_apart() -> None:
    """Near threshold 1 - 1e-9 (logit ≈ 20.72) a logit of 20.7 is not predicted, 20.8 is, though both sigmoids are 1."""
    h = Hierarchy.from_edges([("p", "c")])
    threshold = 1 - 1e-9
    target = [[1, 0], [1, 1]]
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        logits = torch.tensor([[20.7, -30.0], [20.8, 20.8]], dtype=dtype)
        expected = [[_exact_above(float(v), threshold) for v in row] for row in logits.double().tolist()]
        if dtype in (torch.float32, torch.float64):  # the defect's premise: float32 sigmoids are all 1
            assert expected == [[False, False], [True, True]]
            assert torch.sigmoid(logits.float())[:, 0].tolist() == [1.0, 1.0]
        predicted = np.array(expected, dtype=int)
        want = precision_recall_fscore_support(*_augmented_reference(predicted, np.array(target), h)[::-1],
                                               average="micro", zero_division=0.0)[:3]
        got = hierarchical_prf(logits, target, h, threshold=threshold, from_logits=True)
        assert [float(v) for v in got] == pytest.approx([float(v) for v in want], abs=1e-12), dtype


def test_prf_from_logits_reads_nothing_back() -> None:
    """With validate_args=False and from_logits=True, hierarchical_prf and HierarchicalF1 run on 'meta' tensors."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    p, y = torch.randn(20, 4, device="meta"), torch.zeros(20, 4, dtype=torch.long, device="meta")
    for average in ("micro", "macro", "samples"):
        out = hierarchical_prf(p, y, h, average, threshold=0.3, from_logits=True, validate_args=False)
        assert all(v.device.type == "meta" for v in out)
        metric = HierarchicalF1(h, average=average, threshold=0.3, from_logits=True, validate_args=False).to("meta")
        metric.update(p, y)


# ---------------------------------------------------------------------------------------------- chunked CSV readers


def test_csv_reader_with_chunksize_is_an_iterable_of_chunks(tmp_path: Path) -> None:
    """The reader pd.read_csv(..., chunksize=) returns is counted chunk by chunk, not refused as one odd object."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    rng = np.random.default_rng(3)
    frame = pd.DataFrame((rng.random((250, 4)) < 0.4).astype(int), columns=list(h.labels))
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    want = ConditionalWeight().fit(h, frame)
    with pd.read_csv(path, chunksize=64) as reader:
        got = ConditionalWeight().fit(h, reader)
    assert got == want and got.table().equals(want.table())
    with pytest.raises(TypeError, match=r"labels must be a numpy array, .* got Series$"):
        count_edges(h, frame["a"])
