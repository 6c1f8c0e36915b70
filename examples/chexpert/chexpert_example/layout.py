"""Where the CheXpert files are: the two download layouts, the default CSVs, and image paths read from a CSV.

CheXpert comes as ``CheXpert-v1.0/`` (full-size images) or ``CheXpert-v1.0-small/`` (about 390 × 320). Each CSV
names its images relative to the folder that holds the layout folder (``DATA_ROOT``), starting with the layout's
name: ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``. The VisualCheXbert training labels
(``train_visualCheXbert.csv``) always name ``CheXpert-v1.0/`` paths, also when used with the small images: such
an entry is read from whichever layout folder ``DATA_ROOT`` holds (:func:`resolve_image_paths`).

Needs the standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LAYOUTS",
    "TRAIN_LABELS",
    "DataFiles",
    "default_data_files",
    "find_layout",
    "missing_files_message",
    "resolve_image_paths",
]

#: The two download layouts: full-size images, and the 320-pixel "small" version.
LAYOUTS: tuple[str, ...] = ("CheXpert-v1.0", "CheXpert-v1.0-small")
#: ``--train-labels``: the file name of each training label set inside the layout folder.
TRAIN_LABELS: dict[str, str] = {"visualchexbert": "train_visualCheXbert.csv", "labeler": "train.csv"}


def find_layout(root: str | os.PathLike[str], layout: str = "auto") -> str:
    """The layout folder under ``root``: the one present (``'auto'``), or the one asked for.

    Raises:
        FileNotFoundError: when ``root`` holds no layout folder, or not the one asked for (naming the folder).
        ValueError: with ``'auto'`` when ``root`` holds both (choose with ``--layout``), or an unknown layout.
    """
    base = Path(root)
    if layout != "auto":
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
        if not (base / layout).is_dir():
            raise FileNotFoundError(f"--layout {layout}: folder {base / layout} does not exist")
        return layout
    present = [name for name in LAYOUTS if (base / name).is_dir()]
    if not present:
        raise FileNotFoundError(f"{base} holds neither {LAYOUTS[0]}/ nor {LAYOUTS[1]}/ (give --data-root the folder "
                                "that contains one)")
    if len(present) > 1:
        raise ValueError(f"{base} holds both {LAYOUTS[0]}/ and {LAYOUTS[1]}/: choose one with --layout")
    return present[0]


@dataclass(frozen=True)
class DataFiles:
    """The label CSVs of a run (``test`` is ``None`` when no test set is scored)."""

    layout: str
    train: Path
    valid: Path
    test: Path | None


def default_data_files(root: str | os.PathLike[str], layout: str = "auto", train_labels: str = "visualchexbert",
                       train_csv: Path | None = None, valid_csv: Path | None = None,
                       test_csv: Path | None = None) -> DataFiles:
    """The CSVs to read: those given, else the layout folder's ``train_visualCheXbert.csv`` (or ``train.csv``
    with ``train_labels='labeler'``) and ``valid.csv``; the layout folder is only looked for when a default is used.

    Raises:
        FileNotFoundError: naming the first CSV (or layout folder) that does not exist.
        ValueError: on an unknown ``train_labels``, or a root holding both layouts.
    """
    if train_labels not in TRAIN_LABELS:
        raise ValueError(f"train labels must be one of {tuple(TRAIN_LABELS)}, got {train_labels!r}")
    base = Path(root)
    folder = find_layout(base, layout) if train_csv is None or valid_csv is None else layout
    train = train_csv if train_csv is not None else base / folder / TRAIN_LABELS[train_labels]
    valid = valid_csv if valid_csv is not None else base / folder / "valid.csv"
    for role, path in (("training", train), ("validation", valid), ("test", test_csv)):
        if path is not None and not Path(path).is_file():
            hint = ""
            if role == "training" and train_csv is None and train_labels == "visualchexbert":
                hint = (" (the VisualCheXbert labels, downloaded separately; --train-labels labeler reads "
                        f"{base / folder / TRAIN_LABELS['labeler']} instead)")
            raise FileNotFoundError(f"{role} labels not found: {path}{hint}")
    return DataFiles(folder, Path(train), Path(valid), None if test_csv is None else Path(test_csv))


def resolve_image_paths(entries: Sequence[str], root: str | os.PathLike[str]) -> tuple[list[Path], str | None]:
    """Absolute paths of a CSV's ``Path`` / ``Study`` entries, with the layout read from the entries.

    An entry is relative to ``root``. When its first component is a layout folder that ``root`` does not hold
    and ``root`` holds the other layout, the entry is read from the other one (``CheXpert-v1.0/train/…`` from
    ``CheXpert-v1.0-small/train/…``): the VisualCheXbert labels with the small images.

    Returns:
        ``(paths, note)``: ``note`` says which remapping was made (``None`` when none).
    """
    base = Path(root)
    present = {name for name in LAYOUTS if (base / name).is_dir()}
    remap: dict[str, str] = {}
    for name in LAYOUTS:
        others = sorted(present - {name})
        if name not in present and len(others) == 1:
            remap[name] = others[0]
    paths, used = [], set()
    for entry in entries:
        text = str(entry)
        head, sep, tail = text.partition("/")
        if sep and head in remap:
            used.add(head)
            text = f"{remap[head]}/{tail}"
        paths.append(base / text)
    note = "; ".join(f"{name}/ entries read from {base / remap[name]}/" for name in sorted(used)) or None
    return paths, note


def missing_files_message(source: str | os.PathLike[str], paths: Sequence[Path], what: str = "images",
                          is_present: Callable[[Path], bool] = os.path.isfile) -> str | None:
    """One line naming how many of ``paths`` (listed in ``source``) do not exist and the first of them, or
    ``None`` when all exist. ``is_present`` is the existence test (``os.path.isfile`` or ``os.path.isdir``)."""
    missing = [path for path in paths if not is_present(path)]
    if not missing:
        return None
    return f"{os.fspath(source)}: {len(missing)} of {len(paths)} {what} not found, the first: {missing[0]}"
