"""Probe-suite tests for the data and consistency-metric defects: each reproduces one defect of the installed wheel."""

from __future__ import annotations

import gzip
import math
import re
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hierloss import Hierarchy
from hierloss.cli import main
from hierloss.datasets import CHEXPERT_OBSERVATIONS, chexpert_targets, load_hmc, load_hmc_arff
from hierloss.metrics import (
    ViolationRate,
    consistency_report,
    edge_violation_counts,
    edge_violations,
    violation_rate,
)

# ---------------------------------------------------------------------------------------------- duplicated columns


def _raw_chexpert() -> pd.DataFrame:
    raw: pd.DataFrame = pd.DataFrame(0.0, index=range(2), columns=list(CHEXPERT_OBSERVATIONS))
    raw.loc[0, "Edema"] = 1
    raw.loc[1, "Fracture"] = 1
    return raw


def test_chexpert_targets_refuses_a_duplicated_observation_column() -> None:
    """A duplicated observation column is refused by name instead of shifting the other observations."""
    raw = _raw_chexpert()
    with pytest.raises(ValueError, match=r"^chexpert_targets: the frame has the label column 'Atelectasis' 2 "
                                         r"times; the targets need each label column once$"):
        chexpert_targets(pd.concat([raw, raw[["Atelectasis"]]], axis=1), policy="zeros")
    with pytest.raises(ValueError, match=r"^chexpert_targets: the frame has the label columns \['Edema', "
                                         r"'Fracture'\] more than once; the targets need each label column once$"):
        chexpert_targets(pd.concat([raw, raw[["Fracture", "Edema", "Edema"]]], axis=1))


def test_chexpert_targets_refuses_a_duplicated_derived_column() -> None:
    """A derived column present twice (it would be overwritten twice, leaving two label columns) is refused."""
    frame = _raw_chexpert()
    frame = pd.concat([frame, pd.DataFrame([[0, 0], [1, 1]], columns=["Abnormal", "Abnormal"])], axis=1)
    with pytest.raises(ValueError, match=r"^chexpert_targets: the frame has the label column 'Abnormal' 2 "
                                         r"times; the targets need each label column once$"):
        chexpert_targets(frame)
    uncertain = pd.concat([_raw_chexpert(), pd.DataFrame([[0, 0], [1, 1]], columns=["Uncertain", "Uncertain"])],
                          axis=1)
    with pytest.raises(ValueError, match=r"^chexpert_targets: the frame has the label column 'Uncertain' 2 times"):
        chexpert_targets(uncertain)
    kept = chexpert_targets(uncertain, uncertain_label=False)  # then 'Uncertain' is not a label: left alone
    assert list(kept.columns).count("Uncertain") == 2


def test_chexpert_targets_keeps_duplicated_columns_that_are_not_labels() -> None:
    """Duplicated columns other than the labels are kept, and the targets equal those of the unique frame."""
    raw = _raw_chexpert()
    extra = pd.DataFrame([["a", "b"], ["c", "d"]], columns=["Path", "Path"])
    with_extra = chexpert_targets(pd.concat([raw, extra], axis=1), policy="zeros")
    plain = chexpert_targets(raw, policy="zeros")
    assert list(with_extra.columns).count("Path") == 2
    pd.testing.assert_frame_equal(with_extra.drop(columns="Path"), plain)
    assert with_extra.loc[0, "Edema"] == 1 and with_extra.loc[1, "Fracture"] == 1


def test_propagate_names_a_duplicated_label_column() -> None:
    """Hierarchy.propagate on a DataFrame with a label column twice names that column, not a shape."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "d": []})
    frame = pd.DataFrame([[0, 1, 0, 0, 1]], columns=["a", "b", "c", "d", "b"])
    with pytest.raises(ValueError, match=r"^DataFrame has the label column 'b' 2 times; propagate needs each label "
                                         r"column once$"):
        h.propagate(frame)
    frame = pd.DataFrame([[0, 1, 0, 0, 1, 1]], columns=["a", "b", "c", "d", "d", "a"])
    with pytest.raises(ValueError, match=r"^DataFrame has the label columns \['a', 'd'\] more than once; propagate "
                                         r"needs each label column once$"):
        h.propagate(frame)
    other = pd.DataFrame([[0, 1, 0, 0, "x", "y"]], columns=["a", "b", "c", "d", "id", "id"])
    out = h.propagate(other)  # a duplicated column that is not a label is returned untouched
    assert out.values.tolist() == [[1, 1, 0, 0, "x", "y"]]


# ---------------------------------------------------------------------------------------------- logits


def _exact_sigmoid(x: float) -> Decimal:
    """sigmoid of the exact value of the float ``x``, to 60 digits (an independent reference)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return 1 / (1 + (-Decimal(x)).exp())


def _exact_flags(logits: np.ndarray, h: Hierarchy, threshold: float | None) -> np.ndarray:
    """A loop over samples and edges comparing exact sigmoids of the logits (and the exact threshold)."""
    out = np.zeros((logits.shape[0], h.num_edges), dtype=bool)
    t = None if threshold is None else Decimal(threshold)
    for n in range(logits.shape[0]):
        for e, (parent, child) in enumerate(h.edges):
            a = _exact_sigmoid(float(logits[n, h.index(parent)]))
            b = _exact_sigmoid(float(logits[n, h.index(child)]))
            out[n, e] = b > a if t is None else (a < t and b > t)
    return out


def _float64_flags(logits: np.ndarray, h: Hierarchy, threshold: float | None) -> np.ndarray:
    """The same loop over float64 sigmoids (exact enough for logits of moderate size)."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    out = np.zeros((logits.shape[0], h.num_edges), dtype=bool)
    for n in range(logits.shape[0]):
        for e, (parent, child) in enumerate(h.edges):
            a, b = p[n, h.index(parent)], p[n, h.index(child)]
            out[n, e] = b > a if threshold is None else (a < threshold and b > threshold)
    return out


def test_any_threshold_violation_between_large_logits_is_counted() -> None:
    """Logits 20 < 30 violate the edge although float32 sigmoids round both to 1 (float64 agrees)."""
    h = Hierarchy.from_edges([("p", "c")])
    logits = torch.tensor([[20.0, 30.0]])
    assert violation_rate(logits, h, threshold=None, from_logits=True).item() == 1.0
    assert violation_rate(logits.double(), h, threshold=None, from_logits=True).item() == 1.0
    assert edge_violation_counts(logits, h, threshold=None, from_logits=True).tolist() == [1]
    assert consistency_report(logits, h, from_logits=True)["violations_any"].tolist() == [1]
    metric = ViolationRate(h, threshold=None, from_logits=True)
    metric.update(logits)
    assert metric.compute().item() == 1.0 and metric.edge_rates().tolist() == [1.0]
    assert violation_rate(torch.tensor([[30.0, 20.0], [25.0, 25.0]]), h, threshold=None,
                          from_logits=True).item() == 0.0  # coherent and tied logits


def _logit_neighbours(thresholds: list[float]) -> np.ndarray:
    """float32 logits at and up to three float32 steps either side of each threshold's logit."""
    values = []
    for t in thresholds:
        centre = np.float32(math.log(t / (1 - t)))
        for steps in range(-3, 4):
            v = centre
            for _ in range(abs(steps)):
                v = np.nextafter(v, np.float32(np.inf if steps > 0 else -np.inf), dtype=np.float32)
            values.append(v)
    return np.array(values, dtype=np.float32)


@pytest.mark.parametrize("threshold", [None, 0.5, 0.3, 0.9, 1e-6, 1 - 1e-6, 1 - 1e-7, 0.7310585786300049])
def test_logit_violations_match_exact_and_float64_references(threshold: float | None) -> None:
    """With from_logits every count equals loops over exact (and, for moderate logits, float64) sigmoids."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"]})
    rng = np.random.default_rng(0)
    pool = np.concatenate([rng.normal(0, 6, 60).astype(np.float32), [0.0, 1e-8, -1e-8, 16.0, 17.0, 20.0, 30.0, 40.0,
                                                                   -40.0, 88.0, -88.0, 1e-30, -1e-30],
                           _logit_neighbours([0.5, 0.3, 0.9, 1e-6, 1 - 1e-6, 1 - 1e-7, 0.7310585786300049])])
    pool = pool.astype(np.float32)
    logits = rng.choice(pool, size=(300, h.num_labels))
    logits[:40] = rng.choice(pool, size=(40, 1))  # ties
    want = _exact_flags(logits, h, threshold)
    tensor = torch.from_numpy(logits)
    np.testing.assert_array_equal(edge_violations(tensor, h, threshold, from_logits=True).numpy(), want)
    assert violation_rate(tensor, h, threshold, from_logits=True).item() == pytest.approx(want.any(1).mean())
    np.testing.assert_array_equal(edge_violation_counts(logits, h, threshold, from_logits=True).numpy(), want.sum(0))
    metric = ViolationRate(h, threshold=threshold, from_logits=True)
    for batch in (tensor[:130], tensor[130:]):
        metric.update(batch)
    assert metric.compute().item() == pytest.approx(want.any(1).mean())
    np.testing.assert_allclose(metric.edge_rates().numpy(), want.mean(0), rtol=1e-6)
    if threshold is not None:
        report = consistency_report(tensor, h, threshold, from_logits=True)
        np.testing.assert_array_equal(report["violations"], want.sum(0))
        np.testing.assert_array_equal(report["violations_any"], _exact_flags(logits, h, None).sum(0))
    wide = rng.normal(0, 8, size=(200, h.num_labels))  # float64 logits
    np.testing.assert_array_equal(edge_violations(torch.from_numpy(wide), h, threshold, from_logits=True).numpy(),
                                  _exact_flags(wide, h, threshold))
    # float64 sigmoids tell float32 logits apart where they are moderate, and away from exactly 0 and the threshold
    decisive = (np.abs(logits) <= 14) & ((logits == 0) | (np.abs(logits) >= 1e-6))
    if threshold is not None:
        decisive &= np.abs(1 / (1 + np.exp(-logits.astype(np.float64))) - threshold) > 1e-12
    moderate = logits[decisive.all(axis=1)]
    assert len(moderate) > 50
    np.testing.assert_array_equal(edge_violations(torch.from_numpy(moderate), h, threshold, from_logits=True).numpy(),
                                  _float64_flags(moderate, h, threshold))


def test_logits_at_a_threshold_near_one_are_judged_as_float64_judges_them() -> None:
    """Parent logit 16 is below 1 - 1e-7 (its float32 sigmoid rounds onto the threshold), child 17 above it."""
    h = Hierarchy.from_edges([("p", "c")])
    logits = torch.tensor([[16.0, 17.0], [-1e-8, 1e-8]])
    assert _float64_flags(logits.numpy(), h, 1 - 1e-7)[:, 0].tolist() == [True, False]
    assert edge_violations(logits, h, 1 - 1e-7, from_logits=True)[:, 0].tolist() == [True, False]
    assert _float64_flags(logits.numpy(), h, 0.5)[:, 0].tolist() == [False, True]
    assert edge_violations(logits, h, 0.5, from_logits=True)[:, 0].tolist() == [False, True]
    assert violation_rate(logits.double(), h, 0.5, from_logits=True).item() == 0.5


def test_logits_keep_nan_and_infinity_rules() -> None:
    """Infinite logits compare as probabilities 0 and 1; a NaN logit violates nothing without validation."""
    h = Hierarchy.from_edges([("p", "c")])
    logits = torch.tensor([[-math.inf, math.inf], [math.inf, math.inf], [math.nan, 5.0]])
    flags = edge_violations(logits, h, None, from_logits=True, validate_args=False)[:, 0].tolist()
    assert flags == [True, False, False]
    flags = edge_violations(logits, h, 0.5, from_logits=True, validate_args=False)[:, 0].tolist()
    assert flags == [True, False, False]
    with pytest.raises(ValueError, match=r"^`preds` column 0 \('p'\) holds 1 NaN value\(s\)"):
        violation_rate(logits, h, None, from_logits=True)


# ---------------------------------------------------------------------------------------------- HMC splits

_HEADER = "@RELATION t\n@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical 1,1/1,2\n@DATA\n"


def _splits(folder: Path, train: str = "1,1/1\n3,2\n", valid: str | None = None, test: str = "4,2\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "d.train.arff").write_text(_HEADER + train)
    (folder / "d.test.arff").write_text(_HEADER + test)
    if valid is not None:
        (folder / "d.valid.arff").write_text(_HEADER + valid)
    return folder


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_load_hmc_refuses_an_empty_split(tmp_path: Path, split: str) -> None:
    """A split file with no data rows (comments and blank lines aside) is refused by name, not imputed with NaN."""
    empty = "% nothing here\n\n"
    kwargs = {"train": "1,1/1\n3,2\n", "valid": "5,1\n", "test": "4,2\n", split: empty}
    folder = _splits(tmp_path / "d", **kwargs)
    path = re.escape(str(folder / f"d.{split}.arff"))
    with pytest.raises(ValueError, match=rf"^{path}: the {split} split has no data rows after @DATA$"):
        load_hmc(folder)
    with pytest.raises(ValueError, match=rf"^{path}: the {split} split has no data rows after @DATA$"):
        load_hmc(folder, merge_valid=True)
    assert load_hmc_arff(folder / f"d.{split}.arff").X.shape == (0, 1)  # one file on its own may be empty


def test_demo_on_an_empty_train_split_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hierloss demo --data` on an empty train file prints one error line naming it and exits 2, no traceback."""
    folder = _splits(tmp_path / "d", train="")
    assert main(["demo", "--no-progress", "--epochs", "1", "--losses", "bce", "--data", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"hierloss demo: error: {folder / 'd.train.arff'}: the train split has no data rows "
                            "after @DATA\n")
    assert captured.out == ""


# ---------------------------------------------------------------------------------------------- ARFF edge cases


def test_quoted_nominal_values_are_accepted(tmp_path: Path) -> None:
    """Single- or double-quoted nominal values read like their unquoted text, in the declaration and the data."""
    path = tmp_path / "q.arff"
    path.write_text("@ATTRIBUTE a {'x y','z'}\n@ATTRIBUTE b {\"u v\", w}\n@ATTRIBUTE c numeric\n"
                    "@ATTRIBUTE class hierarchical 1,2\n@DATA\n"
                    "'x y',\"u v\",'1.5',1\n z , w ,\"2\",2\n'z','w',?,1\n?,'u v',3,2\n")
    data = load_hmc_arff(path)
    assert data.feature_names == ("a=x y", "a=z", "b=u v", "b=w", "c")
    want = np.array([[1, 0, 1, 0, 1.5], [0, 1, 0, 1, 2], [0, 1, 0, 1, np.nan], [np.nan, np.nan, 1, 0, 3]],
                    dtype=np.float32)
    np.testing.assert_array_equal(data.X, want)


def test_unbalanced_quotes_name_the_file_and_line(tmp_path: Path) -> None:
    """An unbalanced quote in a data row or a nominal declaration names the file, the line and the field."""
    path = tmp_path / "u.arff"
    path.write_text('@ATTRIBUTE a {x,z}\n@ATTRIBUTE class hierarchical 1,2\n@DATA\nx,1\n"x,1\nz,2\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: line 5: attribute 'a': unbalanced quote in "
                                         r"'\"x'$"):
        load_hmc_arff(path)
    path.write_text("@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical 1,2\n@DATA\n1,1\n2',2\n")
    with pytest.raises(ValueError, match=r"u\.arff: line 5: attribute 'a': unbalanced quote in \"2'\"$"):
        load_hmc_arff(path)
    path.write_text("@ATTRIBUTE a {'x,y',z}\n@ATTRIBUTE class hierarchical 1,2\n@DATA\nz,1\n")
    with pytest.raises(ValueError, match=r"u\.arff: line 1: attribute 'a': unbalanced quote in the nominal value "
                                         r"\"'x\" \(a comma inside quotes is not supported\)$"):
        load_hmc_arff(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark before the header (plain or gzipped) reads like the file without it."""
    text = "@ATTRIBUTE a numeric\n@ATTRIBUTE b {x,y}\n@ATTRIBUTE class hierarchical 1,1/1,2\n@DATA\n1,y,1/1\n2,x,2\n"
    plain, marked, zipped = tmp_path / "p.arff", tmp_path / "m.arff", tmp_path / "m.arff.gz"
    plain.write_text(text)
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    zipped.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text.encode()))
    want = load_hmc_arff(plain)
    for path in (marked, zipped):
        got = load_hmc_arff(path)
        np.testing.assert_array_equal(got.X, want.X)
        np.testing.assert_array_equal(got.Y, want.Y)
        assert got.feature_names == want.feature_names and got.hierarchy == want.hierarchy
    marked.write_bytes(b"\xef\xbb\xbf" + text.replace("1,y,1/1", "1,y,9").encode())
    with pytest.raises(ValueError, match=r"m\.arff: line 5: unknown label '9'$"):  # line numbers unchanged
        load_hmc_arff(marked)
