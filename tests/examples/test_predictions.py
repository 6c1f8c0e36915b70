"""Tests for chexpert_example.predictions: predictions CSVs and matching them to label CSVs (core environment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chexpert_example.labels import OBSERVATIONS, derive_targets
from chexpert_example.predictions import (
    image_key,
    match_targets,
    read_predictions,
    study_key,
    write_predictions_csv,
)

from hierloss.datasets import chexpert_hierarchy

LABELS = list(chexpert_hierarchy().labels)


def studies_csv(path: Path, rows: dict[str, list[int]]) -> Path:
    pd.DataFrame([{"Study": study, **dict(zip(OBSERVATIONS, values))} for study, values in rows.items()]).to_csv(
        path, index=False)
    return path


def test_write_then_read_round_trips_in_the_reference_format(tmp_path: Path) -> None:
    """train.py's CSV has Path and per label _GT, _Pred (and _Std); reading gives back paths and probabilities."""
    rng = np.random.default_rng(0)
    probs, targets, std = rng.random((3, 21)), (rng.random((3, 21)) < 0.5).astype(float), rng.random((3, 21))
    images = ["CheXpert-v1.0/test/p1/s1/view1_frontal.jpg", "test/p1/s1/view2_lateral.jpg", "test/p2/s1/v.jpg"]
    frame = write_predictions_csv(tmp_path / "p.csv", images, LABELS, probs, targets, std)
    assert list(frame.columns[:4]) == ["Path", f"{LABELS[0]}_GT", f"{LABELS[0]}_Pred", f"{LABELS[0]}_Std"]
    read_images, read_probs = read_predictions(tmp_path / "p.csv", LABELS)
    assert read_images == images
    np.testing.assert_allclose(read_probs, probs)
    plain = pd.DataFrame({"Path": images, **{label: probs[:, j] for j, label in enumerate(reversed(LABELS))}})
    plain.to_csv(tmp_path / "plain.csv", index=False)  # plain <label> columns, any order
    np.testing.assert_allclose(read_predictions(tmp_path / "plain.csv", LABELS)[1], probs[:, ::-1])
    with pytest.raises(ValueError, match=r"Expected GT of shape \(3, 21\), got \(3, 20\)"):
        write_predictions_csv(tmp_path / "bad.csv", images, LABELS, probs, targets[:, :20])


def test_read_predictions_errors(tmp_path: Path) -> None:
    """No Path column, missing label columns and values that are not probabilities are named."""
    pd.DataFrame({"image": ["a"]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match=r"a.csv: expected a 'Path' column"):
        read_predictions(tmp_path / "a.csv", LABELS)
    pd.DataFrame({"Path": ["a"], **{f"{label}_Pred": [0.5] for label in LABELS[:-2]}}).to_csv(tmp_path / "b.csv",
                                                                                             index=False)
    with pytest.raises(ValueError, match=rf"no prediction column for 2 labels, the first: '{LABELS[-2]}'"):
        read_predictions(tmp_path / "b.csv", LABELS)
    pd.DataFrame({"Path": ["a", "b"], **{f"{label}_Pred": [0.5, 1.5 if label == "Edema" else 0.1]
                                         for label in LABELS}}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'Edema_Pred', row 3 holds 1.5, not a probability in \[0, 1\]"):
        read_predictions(tmp_path / "c.csv", LABELS)


def test_keys_drop_the_layout_folder() -> None:
    """Image and study keys are compared without CheXpert-v1.0/ or CheXpert-v1.0-small/."""
    assert image_key("CheXpert-v1.0-small/valid/p/s/v.jpg") == "valid/p/s/v.jpg" == image_key("valid/p/s/v.jpg")
    assert study_key("CheXpert-v1.0/test/p/s1/view1_frontal.jpg") == "test/p/s1" == study_key("test/p/s1/v.jpg")


def test_match_targets_per_study_and_per_image(tmp_path: Path) -> None:
    """Each image gets its study's (or its own row's) derived targets; layout prefixes do not matter."""
    rows = {"CheXpert-v1.0/test/p1/s1": [0, 1, 1] + [0] * 11, "CheXpert-v1.0/test/p2/s1": [1] + [0] * 13}
    csv = studies_csv(tmp_path / "gt.csv", rows)
    images = ["test/p2/s1/view1_frontal.jpg", "test/p1/s1/view1_frontal.jpg", "test/p1/s1/view2_lateral.jpg"]
    targets = match_targets(images, csv, LABELS)
    derived = derive_targets(pd.read_csv(csv), "zeros")[LABELS].to_numpy()
    np.testing.assert_array_equal(targets, derived[[1, 0, 0]])
    per_image = tmp_path / "valid.csv"
    pd.DataFrame([{"Path": f"CheXpert-v1.0-small/{p}", **dict(zip(OBSERVATIONS, v))}
                  for p, v in zip(images, ([1] + [0] * 13, [0, 1] + [0] * 12, [0] * 14))]).to_csv(per_image,
                                                                                               index=False)
    np.testing.assert_array_equal(match_targets(images, per_image, LABELS),
                                  derive_targets(pd.read_csv(per_image), "zeros")[LABELS].to_numpy())
    twenty = [label for label in LABELS if label != "Uncertain"]
    assert match_targets(images, csv, twenty).shape == (3, 20)


def test_match_targets_errors(tmp_path: Path) -> None:
    """An image without a label row, a repeated key, and labels that are not CheXpert's are named."""
    csv = studies_csv(tmp_path / "gt.csv", {"CheXpert-v1.0/test/p1/s1": [0] * 14})
    with pytest.raises(ValueError, match=r"gt.csv: no label row for 1 of 2 predicted images, the first: test/p9/s1/a"):
        match_targets(["test/p1/s1/a.jpg", "test/p9/s1/a.jpg"], csv, LABELS)
    twice = studies_csv(tmp_path / "twice.csv", {"CheXpert-v1.0/test/p1/s1": [0] * 14})
    pd.concat([pd.read_csv(twice)] * 2).to_csv(twice, index=False)
    with pytest.raises(ValueError, match=r"twice.csv: Study 'test/p1/s1' appears more than once"):
        match_targets(["test/p1/s1/a.jpg"], twice, LABELS)
    with pytest.raises(ValueError, match=r"the labels \['Edema'\] are not the derived CheXpert targets"):
        match_targets(["test/p1/s1/a.jpg"], csv, ["Edema"])
