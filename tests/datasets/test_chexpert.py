"""Tests for hierloss.datasets: the CheXpert hierarchy and the reference's target derivation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierloss.datasets import CHEXPERT_OBSERVATIONS, CHEXPERT_PARENTS, chexpert_hierarchy, chexpert_targets

_EDGES = {
    ("Abnormal", "Opacity"), ("Abnormal", "Cardiac"), ("Abnormal", "Other"),
    ("Opacity", "Lung Opacity"), ("Opacity", "Lung Lesion"), ("Opacity", "Fluid Accumulation"),
    ("Opacity", "Missing Lung Tissue"),
    ("Fluid Accumulation", "Edema"), ("Fluid Accumulation", "Consolidation"),
    ("Fluid Accumulation", "Pleural Effusion"), ("Fluid Accumulation", "Pneumonia"),
    ("Missing Lung Tissue", "Atelectasis"), ("Missing Lung Tissue", "Pneumothorax"),
    ("Missing Lung Tissue", "Pleural Other"),
    ("Cardiac", "Enlarged Cardiomediastinum"), ("Cardiac", "Cardiomegaly"),
    ("Other", "Fracture"), ("Other", "Support Devices"),
    ("Enlarged Cardiomediastinum", "Cardiomegaly"), ("Consolidation", "Pneumonia"),
}


def _reference_targets(frame: pd.DataFrame, uncertain: bool = True) -> pd.DataFrame:
    """A row-by-row port of the reference's derivation (the loop the library replaces)."""
    out = frame.copy()
    rows = []
    for _, row in frame.iterrows():
        new = {}
        all_zero = all(row[c] == 0 for c in CHEXPERT_OBSERVATIONS)
        if uncertain:
            new["Uncertain"] = 1 if all_zero else 0
        new["Abnormal"] = 0 if (row["No Finding"] == 1 or all_zero) else 1
        new["Cardiac"] = 1 if (row["Enlarged Cardiomediastinum"] == 1 or row["Cardiomegaly"] == 1) else 0
        opacity = ["Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Pleural Effusion",
                   "Atelectasis", "Pneumothorax", "Pleural Other"]
        new["Opacity"] = 1 if any(row[c] == 1 for c in opacity) else 0
        fluid = ["Edema", "Consolidation", "Pneumonia", "Pleural Effusion"]
        new["Fluid Accumulation"] = 1 if any(row[c] == 1 for c in fluid) else 0
        missing = ["Atelectasis", "Pneumothorax", "Pleural Other"]
        new["Missing Lung Tissue"] = 1 if any(row[c] == 1 for c in missing) else 0
        new["Other"] = 1 if (row["Fracture"] == 1 or row["Support Devices"] == 1) else 0
        rows.append(new)
    derived = pd.DataFrame(rows, index=frame.index)
    for col in derived.columns:
        out[col] = derived[col].astype(np.int64)
    return out


def test_chexpert_structure() -> None:
    """21 labels in the reference order and exactly the paper's 20 edges."""
    h = chexpert_hierarchy()
    assert h.labels == (*sorted(CHEXPERT_OBSERVATIONS), "Uncertain", "Abnormal", "Cardiac", "Fluid Accumulation",
                        "Missing Lung Tissue", "Opacity", "Other")
    assert set(h.edges) == _EDGES and h.num_edges == 20
    assert h.parents("Cardiomegaly") == ("Enlarged Cardiomediastinum", "Cardiac")
    assert h.parents("Pneumonia") == ("Consolidation", "Fluid Accumulation")
    assert "No Finding" in h.roots and "Uncertain" in h.roots


def test_chexpert_without_uncertain() -> None:
    """uncertain=False drops the 'Uncertain' label only."""
    h = chexpert_hierarchy(uncertain_label=False)
    assert h.num_labels == 20 and "Uncertain" not in h.labels and h.num_edges == 20


def test_targets_match_reference_on_real_file(shared_data: Path) -> None:
    """On the CheXpert test ground truth the vectorised derivation equals the reference's row loop."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_groundtruth.csv")
    for uncertain in (True, False):
        got = chexpert_targets(frame, uncertain_label=uncertain)
        want = _reference_targets(frame, uncertain=uncertain)
        pd.testing.assert_frame_equal(got, want, check_like=True)
        labels = list(chexpert_hierarchy(uncertain).labels)
        assert got[labels].shape == (500, len(labels))


def test_targets_keep_violations(shared_data: Path) -> None:
    """Rows with 'No Finding' and another finding keep the violation (this is not propagate)."""
    frame = pd.read_csv(shared_data / "chexpert" / "test_groundtruth.csv")
    got = chexpert_targets(frame)
    both = (got["No Finding"] == 1) & (got["Support Devices"] == 1)
    assert (got.loc[both, "Abnormal"] == 0).all()
    assert (got.loc[both, "Other"] == 1).all()


def test_targets_columns_any_order_and_extra_columns() -> None:
    """Columns are matched by name; extra columns are kept; the input is not modified."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.integers(0, 2, (30, 14)), columns=list(reversed(CHEXPERT_OBSERVATIONS)))
    frame.insert(0, "Path", [f"img{i}.jpg" for i in range(30)])
    got = chexpert_targets(frame)
    pd.testing.assert_frame_equal(got, _reference_targets(frame), check_like=True)
    assert "Abnormal" not in frame.columns and got["Path"].tolist() == frame["Path"].tolist()


def test_targets_errors() -> None:
    """Missing observation columns and values outside {0, 1} are named in the error."""
    frame = pd.DataFrame(0, index=range(3), columns=list(CHEXPERT_OBSERVATIONS))
    with pytest.raises(ValueError, match=r"missing observation columns \['Edema'\]"):
        chexpert_targets(frame.drop(columns=["Edema"]))
    bad = frame.astype(float)
    bad.loc[0, "Pneumonia"] = -1.0
    bad.loc[1, "Pneumonia"] = -1.0
    with pytest.raises(ValueError, match=r"column 'Pneumonia' holds -1\.0 \(2 values outside \{0, 1\}\)"):
        chexpert_targets(bad)
    nan = frame.astype(float)
    nan.loc[2, "Edema"] = np.nan
    with pytest.raises(ValueError, match=r"column 'Edema' holds nan \(1 values"):
        chexpert_targets(nan)


# ---------------------------------------------------------------- uncertainty policies on CheXpert's raw labels
def _raw_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("policy", "uncertain_value"), [("ones", 1.0), ("zeros", 0.0)])
def test_policies_map_uncertain_and_blanks_like_the_raw_text(shared_data: Path, policy: str,
                                                              uncertain_value: float) -> None:
    """'ones' / 'zeros' map '-1.0' to 1 / 0 and blanks to 0 (not mentioned, as the reference), cell by cell, as read
    from the raw CSV text; the derived columns are then the reference's of those 0/1 observations."""
    path = shared_data / "chexpert" / "test_labeler.csv"
    got = chexpert_targets(pd.read_csv(path), policy=policy)  # type: ignore[arg-type]
    text_value = {"1.0": 1.0, "0.0": 0.0, "-1.0": uncertain_value, "": 0.0}
    expected = np.array([[text_value[row[name]] for name in CHEXPERT_OBSERVATIONS] for row in _raw_rows(path)])
    np.testing.assert_array_equal(got[list(CHEXPERT_OBSERVATIONS)].to_numpy(), expected)
    mapped = pd.DataFrame(expected, columns=list(CHEXPERT_OBSERVATIONS))
    want = _reference_targets(mapped)
    for name in ("Uncertain", *CHEXPERT_PARENTS):
        np.testing.assert_array_equal(got[name].to_numpy(), want[name].to_numpy(), err_msg=name)


def test_ignore_policy_leaves_exactly_the_undetermined_targets_missing(shared_data: Path) -> None:
    """'ignore' makes exactly the -1 cells NaN, still maps blanks to 0, and a derived column is NaN iff resolving
    the row's -1s in all 2^k ways gives it different values (checked by brute force on every real row with k ≤ 8)."""
    import itertools

    path = shared_data / "chexpert" / "test_labeler.csv"
    rows = _raw_rows(path)
    got = chexpert_targets(pd.read_csv(path), policy="ignore")
    values = got[list(CHEXPERT_OBSERVATIONS)].to_numpy(dtype=np.float64)
    expected_nan = np.array([[row[name] == "-1.0" for name in CHEXPERT_OBSERVATIONS] for row in rows])
    np.testing.assert_array_equal(np.isnan(values), expected_nan)
    checked = 0
    for i, row in enumerate(rows):
        unknown = [name for name in CHEXPERT_OBSERVATIONS if row[name] == "-1.0"]
        if not unknown or len(unknown) > 8:
            continue
        base = {name: {"1.0": 1, "0.0": 0, "": 0, "-1.0": 0}[row[name]] for name in CHEXPERT_OBSERVATIONS}
        fillings = [dict(base, **dict(zip(unknown, bits))) for bits in itertools.product((0, 1), repeat=len(unknown))]
        outcomes = _reference_targets(pd.DataFrame(fillings, columns=list(CHEXPERT_OBSERVATIONS)))
        for name in ("Uncertain", *CHEXPERT_PARENTS):
            options = set(outcomes[name].tolist())
            value = got.iloc[i][name]
            if len(options) == 1:
                assert value == options.pop(), (row["Study"], name)
            else:
                assert np.isnan(value), (row["Study"], name)
        checked += 1
    assert checked > 50  # many real rows hold uncertain labels


def test_policy_errors_name_the_column_value_and_count() -> None:
    """An unknown policy, a value outside {1, 0, -1, blank} and a non-numeric cell are refused, named."""
    frame = pd.DataFrame(0.0, index=range(2), columns=list(CHEXPERT_OBSERVATIONS))
    with pytest.raises(ValueError, match=r"policy must be one of \('zeros', 'ones', 'ignore', "
                                         r"'zeros-lsr', 'ones-lsr'\) or None, got 'u'"):
        chexpert_targets(frame, policy="u")  # type: ignore[arg-type]
    frame.loc[0, "Edema"] = 2.0
    with pytest.raises(ValueError, match=r"column 'Edema' holds 2.0 \(1 values outside \{1, 0, -1, blank\}\)"):
        chexpert_targets(frame, policy="zeros")
    frame["Edema"] = ["yes", None]
    with pytest.raises(ValueError, match=r"column 'Edema' holds 'yes'"):
        chexpert_targets(frame, policy="zeros")


@pytest.mark.parametrize(("policy", "low", "high", "hard"), [("ones-lsr", 0.55, 0.85, "ones"),
                                                             ("zeros-lsr", 0.0, 0.3, "zeros")])
def test_label_smoothing_policies(shared_data: Path, policy: str, low: float, high: float, hard: str) -> None:
    """U-Ones+LSR / U-Zeros+LSR: every -1 becomes a soft target drawn in [0.55, 0.85] / [0, 0.3], seeded; every
    other cell and every derived column is that of the hard policy."""
    path = shared_data / "chexpert" / "test_labeler.csv"
    frame = pd.read_csv(path)
    got = chexpert_targets(frame, policy=policy, seed=3)  # type: ignore[arg-type]
    want = chexpert_targets(frame, policy=hard)  # type: ignore[arg-type]
    obs = list(CHEXPERT_OBSERVATIONS)
    uncertain = (frame[obs] == -1).to_numpy()
    soft = got[obs].to_numpy()[uncertain]
    assert uncertain.sum() > 100 and ((soft >= low) & (soft <= high)).all() and len(set(soft.tolist())) > 100
    np.testing.assert_array_equal(got[obs].to_numpy()[~uncertain], want[obs].to_numpy()[~uncertain])
    pd.testing.assert_frame_equal(got.drop(columns=obs), want.drop(columns=obs))
    pd.testing.assert_frame_equal(chexpert_targets(frame, policy=policy, seed=3), got)  # type: ignore[arg-type]
    assert not np.array_equal(chexpert_targets(frame, policy=policy, seed=4)[obs].to_numpy(),  # type: ignore[arg-type]
                              got[obs].to_numpy())


def test_edge_weights_refuse_smoothed_targets(shared_data: Path) -> None:
    """Edge weights are counted on hard labels: the estimators refuse the soft targets of a smoothing policy,
    naming the column and the value."""
    from hierloss.edge_weights import ConditionalWeight

    frame = pd.read_csv(shared_data / "chexpert" / "test_labeler.csv")
    soft = chexpert_targets(frame, policy="ones-lsr")
    with pytest.raises(ValueError, match=r"column '[A-Za-z ]+' holds 0\.[5-8]"):
        ConditionalWeight().fit(chexpert_hierarchy(), soft)
