"""Tests for chexpert_example.layout: the two CheXpert layouts, default CSVs, image paths (core environment)."""

from __future__ import annotations

from pathlib import Path

import pytest
from chexpert_example.layout import default_data_files, find_layout, missing_files_message, resolve_image_paths


def make(root: Path, *folders: str, files: tuple[str, ...] = ()) -> Path:
    for folder in folders:
        (root / folder).mkdir(parents=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    return root


def test_find_layout_takes_the_folder_present(tmp_path: Path) -> None:
    """auto finds CheXpert-v1.0 or CheXpert-v1.0-small; none, both, or a missing one asked for are errors."""
    assert find_layout(make(tmp_path / "a", "CheXpert-v1.0")) == "CheXpert-v1.0"
    assert find_layout(make(tmp_path / "b", "CheXpert-v1.0-small")) == "CheXpert-v1.0-small"
    with pytest.raises(FileNotFoundError, match=r"holds neither CheXpert-v1.0/ nor CheXpert-v1.0-small/"):
        find_layout(make(tmp_path / "c", "other"))
    both = make(tmp_path / "d", "CheXpert-v1.0", "CheXpert-v1.0-small")
    with pytest.raises(ValueError, match=r"holds both .*: choose one with --layout"):
        find_layout(both)
    assert find_layout(both, "CheXpert-v1.0-small") == "CheXpert-v1.0-small"
    with pytest.raises(FileNotFoundError, match=r"--layout CheXpert-v1.0: folder .*/b/CheXpert-v1.0 does not exist"):
        find_layout(tmp_path / "b", "CheXpert-v1.0")
    with pytest.raises(ValueError, match=r"layout must be 'auto' or one of .* got 'v2'"):
        find_layout(tmp_path / "a", "v2")


def test_default_data_files_and_one_line_errors(tmp_path: Path) -> None:
    """Defaults are the layout's train_visualCheXbert.csv (or train.csv) and valid.csv; a missing one is named."""
    root = make(tmp_path, files=("CheXpert-v1.0-small/train.csv", "CheXpert-v1.0-small/valid.csv"))
    files = default_data_files(root, train_labels="labeler")
    assert (files.layout, files.train, files.valid, files.test) == (
        "CheXpert-v1.0-small", root / "CheXpert-v1.0-small/train.csv", root / "CheXpert-v1.0-small/valid.csv", None)
    with pytest.raises(FileNotFoundError) as error:
        default_data_files(root)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"training labels not found: {root}/CheXpert-v1.0-small/train_visualCheXbert.csv")
    assert "--train-labels labeler reads" in message
    with pytest.raises(FileNotFoundError, match=r"^test labels not found: .*nope.csv$"):
        default_data_files(root, train_labels="labeler", test_csv=tmp_path / "nope.csv")
    given = default_data_files(tmp_path / "elsewhere", train_csv=files.train, valid_csv=files.valid)
    assert given.train == files.train  # explicit CSVs need no layout folder
    with pytest.raises(ValueError, match=r"train labels must be one of .* got 'chexbert'"):
        default_data_files(root, train_labels="chexbert")


def test_resolve_image_paths_reads_the_other_layout(tmp_path: Path) -> None:
    """CheXpert-v1.0/ entries are read from CheXpert-v1.0-small/ when only that exists (and the note says so);
    entries of the layout present, or without a layout, are left as they are."""
    root = make(tmp_path, "CheXpert-v1.0-small")
    paths, note = resolve_image_paths(["CheXpert-v1.0/train/p1/s1/v.jpg", "CheXpert-v1.0-small/valid/p/s/v.jpg",
                                       "test/p/s"], root)
    assert paths == [root / "CheXpert-v1.0-small/train/p1/s1/v.jpg", root / "CheXpert-v1.0-small/valid/p/s/v.jpg",
                     root / "test/p/s"]
    assert note == f"CheXpert-v1.0/ entries read from {root}/CheXpert-v1.0-small/"
    full = make(tmp_path / "full", "CheXpert-v1.0")
    assert resolve_image_paths(["CheXpert-v1.0/a.jpg"], full) == ([full / "CheXpert-v1.0/a.jpg"], None)


def test_missing_files_message_names_the_count_and_the_first(tmp_path: Path) -> None:
    """All present: None; else one line with the source, the count and the first missing path."""
    present = make(tmp_path, files=("a.jpg",)) / "a.jpg"
    assert missing_files_message("x.csv", [present]) is None
    message = missing_files_message("x.csv", [present, tmp_path / "b.jpg", tmp_path / "c.jpg"])
    assert message == f"x.csv: 2 of 3 images not found, the first: {tmp_path / 'b.jpg'}"
