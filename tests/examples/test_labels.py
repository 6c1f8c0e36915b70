"""Tests for chexpert_example.labels on the real CheXpert label files (core environment: no torchvision)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chexpert_example.labels import (
    OBSERVATIONS,
    derive_targets,
    fit_penalties,
    hard_policy,
    path_column,
    read_label_csv,
)

from hierloss.datasets import chexpert_hierarchy

# The paper's derived columns, written out here independently of hierloss.
ANY_OF = {
    "Cardiac": ("Enlarged Cardiomediastinum", "Cardiomegaly"),
    "Opacity": ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Pleural Effusion",
                "Atelectasis", "Pneumothorax", "Pleural Other"),
    "Fluid Accumulation": ("Edema", "Consolidation", "Pneumonia", "Pleural Effusion"),
    "Missing Lung Tissue": ("Atelectasis", "Pneumothorax", "Pleural Other"),
    "Other": ("Fracture", "Support Devices"),
}


def naive_targets(observations: dict[str, int], with_uncertain: bool = True) -> dict[str, int]:
    """The 21 (20) targets of one row of 0/1 observations, by the paper's definitions."""
    out = dict(observations)
    all_zero = not any(observations.values())
    if with_uncertain:
        out["Uncertain"] = int(all_zero)
    out["Abnormal"] = int(not (observations["No Finding"] or all_zero))
    for parent, children in ANY_OF.items():
        out[parent] = int(any(observations[c] for c in children))
    return out


def raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_read_label_csv_reads_every_study_of_the_real_labeler_file(chexpert_labels: Path) -> None:
    """The labeler file is read whole, with its Study column and the raw -1 / blank values untouched."""
    frame = read_label_csv(chexpert_labels / "test_labeler.csv")
    rows = raw_rows(chexpert_labels / "test_labeler.csv")
    assert len(frame) == len(rows) == 500
    assert path_column(frame) == "Study"
    assert list(frame["Study"]) == [row["Study"] for row in rows]
    n_uncertain = sum(row[name] == "-1.0" for row in rows for name in OBSERVATIONS)
    n_blank = sum(row[name] == "" for row in rows for name in OBSERVATIONS)
    assert int((frame[list(OBSERVATIONS)] == -1).to_numpy().sum()) == n_uncertain > 0
    assert int(frame[list(OBSERVATIONS)].isna().to_numpy().sum()) == n_blank > 0


@pytest.mark.parametrize("with_uncertain", [True, False])
@pytest.mark.parametrize("policy", ["ones", "zeros"])
def test_derive_targets_matches_the_paper_definitions_row_by_row(chexpert_labels: Path, policy: str,
                                                                 with_uncertain: bool) -> None:
    """Every target of every real row equals the naive per-row derivation, in chexpert_hierarchy()'s label order."""
    rows = raw_rows(chexpert_labels / "test_labeler.csv")
    targets = derive_targets(read_label_csv(chexpert_labels / "test_labeler.csv"), policy,  # type: ignore[arg-type]
                             with_uncertain=with_uncertain)
    labels = chexpert_hierarchy(uncertain_label=with_uncertain).labels
    assert tuple(targets.columns) == labels
    assert len(labels) == (21 if with_uncertain else 20)
    assert targets.dtypes.eq(np.float32).all()
    unc = 1 if policy == "ones" else 0
    for i, row in enumerate(rows):
        obs = {name: {"1.0": 1, "0.0": 0, "-1.0": unc, "": 0}[row[name]] for name in OBSERVATIONS}
        expected = naive_targets(obs, with_uncertain)
        assert targets.iloc[i].to_dict() == {name: float(expected[name]) for name in labels}, row["Study"]


def test_derive_targets_ignore_keeps_exactly_the_targets_every_resolution_agrees_on(chexpert_labels: Path) -> None:
    """With 'ignore', a target is NaN iff resolving the row's -1s in all 2^k ways gives it different values."""
    rows = raw_rows(chexpert_labels / "test_labeler.csv")
    targets = derive_targets(read_label_csv(chexpert_labels / "test_labeler.csv"), "ignore")
    labels = chexpert_hierarchy().labels
    checked = 0
    for i, row in enumerate(rows):
        unknown = [name for name in OBSERVATIONS if row[name] == "-1.0"]
        if len(unknown) > 8:
            continue
        base = {name: {"1.0": 1, "0.0": 0, "": 0, "-1.0": 0}[row[name]] for name in OBSERVATIONS}
        outcomes = [naive_targets({**base, **dict(zip(unknown, bits))})
                    for bits in itertools.product((0, 1), repeat=len(unknown))]
        for name in labels:
            values = {outcome[name] for outcome in outcomes}
            got = targets.iloc[i][name]
            if len(values) == 1:
                assert got == values.pop(), (row["Study"], name)
            else:
                assert np.isnan(got), (row["Study"], name)
        checked += bool(unknown)
    assert checked > 50  # many real rows hold uncertain labels


def test_groundtruth_file_gives_the_same_targets_under_every_policy(chexpert_labels: Path) -> None:
    """The radiologists' 0/1 ground truth has no -1 or blank, so the three policies agree and nothing is NaN."""
    frame = read_label_csv(chexpert_labels / "test_groundtruth.csv")
    assert len(frame) == 500
    results = [derive_targets(frame, policy) for policy in ("ones", "zeros", "ignore")]  # type: ignore[arg-type]
    assert not results[2].isna().to_numpy().any()
    pd.testing.assert_frame_equal(results[0], results[1])
    pd.testing.assert_frame_equal(results[0], results[2])


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def image_row(path: str, view: str | None = None, **values: float) -> dict[str, object]:
    row: dict[str, object] = {"Path": path}
    if view is not None:
        row["Frontal/Lateral"] = view
    row.update({name: values.get(name.replace(" ", "_"), 0.0) for name in OBSERVATIONS})
    return row


def test_view_filter_uses_the_frontal_lateral_column(tmp_path: Path) -> None:
    """Rows are kept by the 'Frontal/Lateral' column when present, whatever the file name says."""
    csv_path = write_csv(tmp_path / "train.csv", [
        image_row("p1/study1/view1_frontal.jpg", "Frontal"),
        image_row("p1/study1/view2_lateral.jpg", "Lateral"),
        image_row("p2/study1/image.jpg", "Frontal"),
    ])
    assert list(read_label_csv(csv_path, "frontal")["Path"]) == ["p1/study1/view1_frontal.jpg", "p2/study1/image.jpg"]
    assert list(read_label_csv(csv_path, "lateral")["Path"]) == ["p1/study1/view2_lateral.jpg"]
    assert len(read_label_csv(csv_path, "all")) == 3


def test_view_filter_falls_back_on_the_file_name(tmp_path: Path) -> None:
    """Without a 'Frontal/Lateral' column the view comes from names such as view1_frontal.jpg."""
    csv_path = write_csv(tmp_path / "train.csv", [image_row("a/view1_frontal.jpg"), image_row("a/view2_lateral.jpg")])
    assert list(read_label_csv(csv_path, "lateral")["Path"]) == ["a/view2_lateral.jpg"]


def test_read_label_csv_errors_name_the_offender(tmp_path: Path) -> None:
    """Unknown views, missing observation columns and odd Frontal/Lateral values are reported by name."""
    good = write_csv(tmp_path / "good.csv", [image_row("a/view1_frontal.jpg", "Frontal")])
    with pytest.raises(ValueError, match=r"view must be one of \('frontal', 'lateral', 'all'\), got 'side'"):
        read_label_csv(good, "side")  # type: ignore[arg-type]
    missing = write_csv(tmp_path / "missing.csv", [{"Path": "a.jpg", "Edema": 1.0}])
    with pytest.raises(ValueError, match=r"missing observation columns \['Atelectasis'"):
        read_label_csv(missing)
    odd = write_csv(tmp_path / "odd.csv", [image_row("a.jpg", "Oblique")])
    with pytest.raises(ValueError, match=r"column 'Frontal/Lateral' holds 'oblique'"):
        read_label_csv(odd, "frontal")
    no_path = write_csv(tmp_path / "nopath.csv", [{name: 0.0 for name in OBSERVATIONS}])
    with pytest.raises(ValueError, match=r"expected a 'Path' or a 'Study' column"):
        read_label_csv(no_path)


def test_derive_targets_rejects_unknown_policies_and_values(tmp_path: Path) -> None:
    """A policy name outside ones/zeros/ignore, or a label outside {1, 0, -1, blank}, raises ValueError (from the
    library's derivation, which the example uses)."""
    frame = read_label_csv(write_csv(tmp_path / "a.csv", [image_row("a.jpg", Edema=2.0), image_row("b.jpg")]))
    with pytest.raises(ValueError, match=r"policy must be one of \('zeros', 'ones', 'ignore', "
                                         r"'zeros-lsr', 'ones-lsr'\) or None, got 'u'"):
        derive_targets(frame, "u")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"column 'Edema' holds 2.0 \(1 values outside \{1, 0, -1, blank\}\)"):
        derive_targets(frame, "zeros")
    frame["Edema"] = ["yes", None]
    with pytest.raises(ValueError, match=r"column 'Edema' holds 'yes'"):
        derive_targets(frame, "zeros")


def naive_conditional_penalty(targets: pd.DataFrame, parent: str, child: str, eps: float = 1e-6) -> float:
    both = targets[[parent, child]].dropna()
    negative = both[both[parent] == 0]
    violations = int((negative[child] == 1).sum())
    return 1.0 - (violations + eps) / (len(negative) + 2 * eps)


@pytest.mark.parametrize("policy", ["zeros", "ignore"])
def test_fit_penalties_data_is_the_paper_estimate_on_the_training_targets(chexpert_labels: Path, policy: str) -> None:
    """'data' gives 1 − P̂(child | parent = 0) per edge, rows with an unknown end left out, as counted naively."""
    hierarchy = chexpert_hierarchy()
    targets = derive_targets(read_label_csv(chexpert_labels / "test_labeler.csv"), policy)  # type: ignore[arg-type]
    penalties = fit_penalties(targets, hierarchy, "data")
    for (parent, child), value in penalties.as_mapping().items():
        assert value == pytest.approx(naive_conditional_penalty(targets, parent, child), abs=1e-12), (parent, child)
    assert min(penalties.as_mapping().values()) < 0.9  # the real labels do violate some edges


def test_fit_penalties_fixed_and_unknown(chexpert_labels: Path) -> None:
    """'fixed' puts β on every edge without reading labels; an unknown estimator raises ValueError."""
    hierarchy = chexpert_hierarchy(uncertain_label=False)
    targets = derive_targets(read_label_csv(chexpert_labels / "test_groundtruth.csv"), "zeros", with_uncertain=False)
    assert set(fit_penalties(targets, hierarchy, "fixed", beta=0.3).as_mapping().values()) == {0.3}
    beta = fit_penalties(targets, hierarchy, "beta").values
    assert beta.shape == (hierarchy.num_edges,)
    with pytest.raises(ValueError, match=r"penalty estimator must be one of \('data', 'fixed', 'beta'\), got 'x'"):
        fit_penalties(targets, hierarchy, "x")


def test_label_smoothing_policies_soften_only_the_uncertain_training_targets(chexpert_labels: Path) -> None:
    """'ones-lsr' / 'zeros-lsr' draw each -1 in [0.55, 0.85] / [0, 0.3] with the seed; every other target is the
    hard policy's, and hard_policy gives that policy (what evaluation and edge weights use)."""
    frame = read_label_csv(chexpert_labels / "test_labeler.csv")
    uncertain = (frame[list(OBSERVATIONS)] == -1).to_numpy()
    for policy, (low, high) in {"ones-lsr": (0.55, 0.85), "zeros-lsr": (0.0, 0.3)}.items():
        soft = derive_targets(frame, policy, seed=1)  # type: ignore[arg-type]
        hard = derive_targets(frame, hard_policy(policy))  # type: ignore[arg-type]
        values = soft[list(OBSERVATIONS)].to_numpy()
        assert ((values[uncertain] >= low) & (values[uncertain] <= high)).all()
        np.testing.assert_array_equal(values[~uncertain], hard[list(OBSERVATIONS)].to_numpy()[~uncertain])
        pd.testing.assert_frame_equal(derive_targets(frame, policy, seed=1), soft)  # type: ignore[arg-type]
    assert hard_policy("ignore") == "ignore"
