"""Predictions CSVs: writing them, reading them (the reference's format or the example's), matching them to labels.

The reference's published test predictions (``default_model_predictions_vs_groundtruth_with_errors.csv`` of
the-mercury/CIHMLC) have a ``Path`` column (``test/patient64741/study1/view1_frontal.jpg``) and, per label,
``<label>_GT``, ``<label>_Pred`` (the sigmoid output) and ``<label>_AE``. ``train.py`` writes the same
``Path`` / ``<label>_GT`` / ``<label>_Pred`` columns (plus ``<label>_Std`` after Monte Carlo dropout). Plain
``<label>`` columns are read as predictions too. Needs pandas and NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexpert_example.labels import UncertaintyPolicy, derive_targets, path_column, read_label_csv
from chexpert_example.layout import LAYOUTS

__all__ = ["image_key", "match_targets", "read_predictions", "study_key", "write_predictions_csv"]

_PRED = "_Pred"


def write_predictions_csv(path: str | os.PathLike[str], images: Sequence[str], labels: Sequence[str],
                          probs: np.ndarray, targets: np.ndarray | None = None,
                          std: np.ndarray | None = None) -> pd.DataFrame:
    """Write one row per image: ``Path``, then per label ``<label>_GT`` (with ``targets``), ``<label>_Pred``
    and ``<label>_Std`` (with ``std``). Returns the frame written.

    Raises:
        ValueError: when an array's shape is not ``(len(images), len(labels))``.
    """
    expected = (len(images), len(labels))
    arrays = {"_Pred": probs, "_GT": targets, "_Std": std}
    for suffix, array in arrays.items():
        if array is not None and tuple(np.shape(array)) != expected:
            raise ValueError(f"Expected {suffix[1:]} of shape {expected}, got {tuple(np.shape(array))}")
    columns: dict[str, object] = {"Path": list(images)}
    for j, label in enumerate(labels):
        for suffix in ("_GT", "_Pred", "_Std"):
            array = arrays[suffix]
            if array is not None:
                columns[f"{label}{suffix}"] = np.asarray(array, dtype=np.float64)[:, j]
    frame = pd.DataFrame(columns)
    frame.to_csv(path, index=False)
    return frame


def read_predictions(path: str | os.PathLike[str], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The image paths and the ``(N, C)`` probabilities of a predictions CSV, columns in ``labels`` order.

    A label's column is ``<label>_Pred`` (the reference's format and the example's), else ``<label>``.

    Raises:
        ValueError: naming a missing ``Path`` column, missing label columns, or the first value that is not a
            probability (its column and row).
    """
    frame = pd.read_csv(path)
    name = os.fspath(path)
    if "Path" not in frame.columns:
        raise ValueError(f"{name}: expected a 'Path' column, got columns {list(frame.columns)[:6]!r}...")
    columns = [f"{label}{_PRED}" if f"{label}{_PRED}" in frame.columns else label for label in labels]
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: no prediction column for {len(missing)} labels, the first: "
                         f"{missing[0].removesuffix(_PRED)!r} (expected '<label>_Pred' or '<label>')")
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = np.isnan(values) | (values < 0) | (values > 1)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        value = frame[columns[column]].iat[row]
        value = value.item() if isinstance(value, np.generic) else value
        raise ValueError(f"{name}: column {columns[column]!r}, row {row + 2} holds {value!r}, not a probability "
                         "in [0, 1]")
    return [str(p) for p in frame["Path"]], values


def image_key(path: str) -> str:
    """A path without its layout folder: ``CheXpert-v1.0/test/p/s/v.jpg`` → ``test/p/s/v.jpg``."""
    head, sep, tail = path.strip().strip("/").partition("/")
    return tail if sep and head in LAYOUTS else path.strip().strip("/")


def study_key(path: str) -> str:
    """The study folder of an image path, without its layout folder: ``test/p/s/v.jpg`` → ``test/p/s``."""
    return str(Path(image_key(path)).parent.as_posix())


def match_targets(images: Sequence[str], labels_csv: str | os.PathLike[str], labels: Sequence[str],
                  policy: UncertaintyPolicy = "zeros") -> np.ndarray:
    """``(N, C)`` targets of ``images`` from a label CSV, derived as the example derives them.

    The label CSV has one row per image (``Path``, as ``valid.csv``) or per study (``Study``, as
    ``test_groundtruth.csv``: an image gets its study folder's labels). Paths are compared without their layout
    folder (``CheXpert-v1.0/`` or ``CheXpert-v1.0-small/``).

    Raises:
        ValueError: when an image has no label row (naming how many and the first), when the label CSV repeats a
            key, or when ``labels`` are not the derived columns.
    """
    frame = read_label_csv(labels_csv)
    key = path_column(frame)
    with_uncertain = "Uncertain" in labels
    derived = derive_targets(frame, policy, with_uncertain=with_uncertain)
    if sorted(derived.columns) != sorted(labels):
        raise ValueError(f"the labels {list(labels)} are not the derived CheXpert targets {list(derived.columns)}")
    keys = [image_key(str(p)) for p in frame[key]]
    duplicated = pd.Index(keys)[pd.Index(keys).duplicated()]
    if len(duplicated):
        raise ValueError(f"{os.fspath(labels_csv)}: {key} {duplicated[0]!r} appears more than once")
    derived.index = pd.Index(keys)
    wanted = [image_key(p) if key == "Path" else study_key(p) for p in images]
    unmatched = [image for image, k in zip(images, wanted) if k not in derived.index]
    if unmatched:
        raise ValueError(f"{os.fspath(labels_csv)}: no label row for {len(unmatched)} of {len(images)} predicted "
                         f"images, the first: {unmatched[0]}")
    return derived.loc[wanted, list(labels)].to_numpy(np.float64)
