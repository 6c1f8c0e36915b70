"""Tests for chexpert_example.synthetic: the fake dataset has the real CheXpert layout (core environment)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from chexpert_example.labels import OBSERVATIONS, derive_targets, read_label_csv
from chexpert_example.synthetic import CHEXPERT_COLUMN_ORDER, write_synthetic_chexpert
from PIL import Image


def header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def test_layout_and_columns_are_chexpert_s(tmp_path: Path) -> None:
    """The CSVs have CheXpert's header and paths; every listed image exists as a grayscale JPEG."""
    splits = write_synthetic_chexpert(tmp_path, n_train=8, n_valid=4, n_test=3, image_height=32)
    real_header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_COLUMN_ORDER]
    assert sorted(CHEXPERT_COLUMN_ORDER) == sorted(OBSERVATIONS)
    for path in (splits.train_csv, splits.train_labeler_csv, splits.valid_csv):
        assert header(path) == real_header
        frame = read_label_csv(path)
        for relative, view in zip(frame["Path"], frame["Frontal/Lateral"]):
            assert relative.startswith("CheXpert-v1.0/")
            assert relative.endswith("view1_frontal.jpg" if view == "Frontal" else "view2_lateral.jpg")
            with Image.open(tmp_path / relative) as image:
                assert image.mode == "L" and image.format == "JPEG" and image.size == (38, 32)
    assert header(splits.test_csv) == ["Study", *CHEXPERT_COLUMN_ORDER]
    studies = read_label_csv(splits.test_csv)["Study"]
    assert len(studies) == 3 and all((tmp_path / s / "view1_frontal.jpg").is_file() for s in studies)
    assert len(read_label_csv(splits.train_csv, "frontal")) == 8


def test_labeler_file_has_uncertain_and_blank_labels_of_the_same_studies(tmp_path: Path) -> None:
    """train.csv holds -1 and blanks where train_visualCheXbert.csv holds 1 and 0 (same rows, same paths)."""
    splits = write_synthetic_chexpert(tmp_path, n_train=64, image_height=16)
    clean, labeler = read_label_csv(splits.train_csv), read_label_csv(splits.train_labeler_csv)
    assert list(clean["Path"]) == list(labeler["Path"])
    values, raw = clean[list(OBSERVATIONS)].to_numpy(), labeler[list(OBSERVATIONS)].to_numpy()
    assert set(np.unique(values)) == {0.0, 1.0}
    assert (raw == -1).any() and np.isnan(raw).any()
    assert (values[raw == -1] == 1).all() and (values[np.isnan(raw)] == 0).all()
    np.testing.assert_array_equal(raw[~np.isnan(raw) & (raw != -1)], values[~np.isnan(raw) & (raw != -1)])
    targets = derive_targets(clean, "zeros")
    assert targets["Uncertain"].sum() > 0 and targets["Abnormal"].sum() > 0  # both labels have two classes


def test_same_seed_same_dataset(tmp_path: Path) -> None:
    """The data are a function of the seed (a resumed --synthetic run trains on the same images)."""
    a = write_synthetic_chexpert(tmp_path / "a", n_train=4, n_valid=2, n_test=2, image_height=16, seed=3)
    b = write_synthetic_chexpert(tmp_path / "b", n_train=4, n_valid=2, n_test=2, image_height=16, seed=3)
    assert a.train_csv.read_text() == b.train_csv.read_text()
    first = read_label_csv(a.train_csv)["Path"][0]
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / first).read_bytes()


def test_positive_observations_are_visible(tmp_path: Path) -> None:
    """An observation's disc is bright exactly when the observation is positive, so the task is learnable."""
    splits = write_synthetic_chexpert(tmp_path, n_train=16, n_valid=2, n_test=2, image_height=64,
                                      lateral_fraction=0.0)
    frame = read_label_csv(splits.train_csv)
    for _, row in frame.iterrows():
        with Image.open(tmp_path / row["Path"]) as image:
            pixels = np.asarray(image, dtype=np.float64)
        height, width = pixels.shape
        for k, name in enumerate(CHEXPERT_COLUMN_ORDER):
            r, c = divmod(k, 4)
            centre = pixels[int((r + 0.5) * height / 4), int((c + 0.5) * width / 4)]
            assert (centre > 130) == (row[name] == 1), (row["Path"], name, centre)


def test_write_synthetic_chexpert_errors(tmp_path: Path) -> None:
    """Too few studies or too small images raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=r"n_valid must be >= 2, got 1"):
        write_synthetic_chexpert(tmp_path, n_valid=1)
    with pytest.raises(ValueError, match=r"image_height must be >= 16, got 8"):
        write_synthetic_chexpert(tmp_path, image_height=8)


def test_small_layout_keeps_the_visualchexbert_and_test_paths_of_the_full_one(tmp_path: Path) -> None:
    """With folder='CheXpert-v1.0-small' images and the labeler / valid CSVs use the small folder, while the
    VisualCheXbert file and the test labels name CheXpert-v1.0/ paths, as the real files do."""
    splits = write_synthetic_chexpert(tmp_path, n_train=3, n_valid=2, n_test=2, image_height=16,
                                      folder="CheXpert-v1.0-small")
    assert splits.train_csv == tmp_path / "CheXpert-v1.0-small" / "train_visualCheXbert.csv"
    assert not (tmp_path / "CheXpert-v1.0").exists()
    labeler, visual = read_label_csv(splits.train_labeler_csv), read_label_csv(splits.train_csv)
    assert all(p.startswith("CheXpert-v1.0-small/train/") for p in labeler["Path"])
    assert list(visual["Path"]) == [p.replace("CheXpert-v1.0-small/", "CheXpert-v1.0/") for p in labeler["Path"]]
    assert all(p.startswith("CheXpert-v1.0-small/valid/") for p in read_label_csv(splits.valid_csv)["Path"])
    studies = read_label_csv(splits.test_csv)["Study"]
    assert all(s.startswith("CheXpert-v1.0/test/") for s in studies)
    assert all((tmp_path / s.replace("CheXpert-v1.0/", "CheXpert-v1.0-small/")).is_dir() for s in studies)
    with pytest.raises(ValueError, match=r"folder must be one of .* got 'CheXpert'"):
        write_synthetic_chexpert(tmp_path, folder="CheXpert")
