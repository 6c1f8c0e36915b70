"""A tiny synthetic dataset in the real CheXpert layout, so that ``--synthetic`` runs the real loading path.

Written under ``root`` (the folder the CSVs' paths are relative to, as for the real data), in the layout
``FOLDER`` = ``CheXpert-v1.0`` (default) or ``CheXpert-v1.0-small``::

    root/FOLDER/train.csv                   labeler labels: 1.0 / 0.0 / -1.0 / blank; paths FOLDER/train/...
    root/FOLDER/train_visualCheXbert.csv    the same images, 0/1 labels; paths CheXpert-v1.0/train/... (always,
                                            as the real VisualCheXbert file)
    root/FOLDER/valid.csv                   0/1 labels (radiologists); paths FOLDER/valid/...
    root/FOLDER/test_labels.csv             one row per *study*: ``Study`` (CheXpert-v1.0/test/..., as the real
                                            test_groundtruth.csv) + 0/1
    root/FOLDER/{train,valid,test}/patientNNNNN/study1/view1_frontal.jpg (+ view2_lateral.jpg)

The train and valid CSVs have the real columns (``Path``, ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and
the 14 observations in CheXpert's order). Images are grayscale JPEGs, 20 % wider than tall like CheXpert's: noise
plus one bright disc per positive observation at a position owned by that observation, so a network can learn
the labels. Needs NumPy, pandas and Pillow only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["CHEXPERT_COLUMN_ORDER", "SyntheticSplits", "write_synthetic_chexpert"]

#: The observation columns in the order of CheXpert's own CSVs.
CHEXPERT_COLUMN_ORDER: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
_FULL = "CheXpert-v1.0"
_LAYOUTS = (_FULL, "CheXpert-v1.0-small")


@dataclass(frozen=True)
class SyntheticSplits:
    """Where :func:`write_synthetic_chexpert` put things (``root`` is what ``--data-root`` takes)."""

    root: Path
    train_csv: Path
    train_labeler_csv: Path
    valid_csv: Path
    test_csv: Path


def _observations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 14)`` 0/1 observations in CheXpert's column order.

    'No Finding' is 1 exactly when no finding is, except in about 10 % of the rows, left all 0 (nothing
    mentioned: the paper's 'Uncertain' rows).
    """
    findings = (rng.random((n, 13)) < 0.3).astype(np.float64)
    no_finding = (findings.sum(1) == 0).astype(np.float64)
    values = np.concatenate([no_finding[:, None], findings], axis=1)
    values[rng.random(n) < 0.1] = 0.0
    return values


def _labeler_view(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """What a report labeler would give: some positives uncertain (-1), most negatives not mentioned (NaN)."""
    out = values.copy()
    draw = rng.random(values.shape)
    out[(values == 1) & (draw < 0.2)] = -1.0
    out[(values == 0) & (draw < 0.7)] = np.nan
    return out


def _image(rng: np.random.Generator, observations: np.ndarray, height: int, lateral: bool) -> Image.Image:
    """Noise plus a disc per positive observation (observation ``k`` owns cell ``k`` of a 4×4 grid)."""
    width = round(height * 1.2)
    pixels = rng.normal(60.0, 20.0, size=(height, width))
    yy, xx = np.mgrid[0:height, 0:width]
    radius = height / 10
    for k, positive in enumerate(observations):
        if positive != 1:
            continue
        row, col = divmod(k, 4)
        cy, cx = (row + 0.5) * height / 4, (col + 0.5) * width / 4
        if lateral:
            cx = width - cx
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] += 140.0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def _write_split(root: Path, folder: str, split: str, first_patient: int, n_studies: int, rng: np.random.Generator,
                 image_height: int, lateral_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images of one split and its per-image rows (``Path`` …) and per-study rows (``Study`` …)."""
    values = _observations(rng, n_studies)
    image_rows, study_rows = [], []
    for i in range(n_studies):
        study = f"{folder}/{split}/patient{first_patient + i:05d}/study1"
        (root / study).mkdir(parents=True, exist_ok=True)
        sex, age = ("Female", "Male")[int(rng.integers(2))], int(rng.integers(18, 90))
        views = [("view1_frontal.jpg", "Frontal", ("AP", "PA")[int(rng.integers(2))])]
        if rng.random() < lateral_fraction:
            views.append(("view2_lateral.jpg", "Lateral", ""))
        for name, view, ap_pa in views:
            _image(rng, values[i], image_height, lateral=view == "Lateral").save(root / study / name, quality=90)
            image_rows.append({"Path": f"{study}/{name}", "Sex": sex, "Age": age, "Frontal/Lateral": view,
                               "AP/PA": ap_pa, **dict(zip(CHEXPERT_COLUMN_ORDER, values[i]))})
        study_rows.append({"Study": f"{_FULL}/{study.partition('/')[2]}",
                           **dict(zip(CHEXPERT_COLUMN_ORDER, values[i].astype(int)))})
    return pd.DataFrame(image_rows), pd.DataFrame(study_rows)


def write_synthetic_chexpert(root: str | Path, n_train: int = 64, n_valid: int = 32, n_test: int = 16,
                             image_height: int = 80, lateral_fraction: float = 0.25,
                             seed: int = 0, folder: str = _FULL) -> SyntheticSplits:
    """Write a synthetic CheXpert (deterministic for a given ``seed``; existing files are overwritten).

    Args:
        root: the output folder; ``root/FOLDER/`` is created.
        n_train: training studies (each one frontal image, plus a lateral one with probability
            ``lateral_fraction``).
        n_valid: validation studies.
        n_test: test studies.
        image_height: image height in pixels (width is 1.2×).
        lateral_fraction: share of studies that also get a lateral image.
        seed: the random seed.
        folder: the layout, ``'CheXpert-v1.0'`` or ``'CheXpert-v1.0-small'``.

    Returns:
        The :class:`SyntheticSplits`.

    Raises:
        ValueError: if a split would have fewer than 2 studies, ``image_height < 16``, or on an unknown layout.
    """
    if folder not in _LAYOUTS:
        raise ValueError(f"folder must be one of {_LAYOUTS}, got {folder!r}")
    for name, count in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if count < 2:
            raise ValueError(f"{name} must be >= 2, got {count}")
    if image_height < 16:
        raise ValueError(f"image_height must be >= 16, got {image_height}")
    base = Path(root)
    rng = np.random.default_rng(seed)
    train, _ = _write_split(base, folder, "train", 1, n_train, rng, image_height, lateral_fraction)
    valid, _ = _write_split(base, folder, "valid", 64541, n_valid, rng, image_height, lateral_fraction)
    _, test = _write_split(base, folder, "test", 64741, n_test, rng, image_height, lateral_fraction)
    where = base / folder
    labeler = train.copy()
    labeler[list(CHEXPERT_COLUMN_ORDER)] = _labeler_view(rng, train[list(CHEXPERT_COLUMN_ORDER)].to_numpy())
    splits = SyntheticSplits(base, where / "train_visualCheXbert.csv", where / "train.csv", where / "valid.csv",
                             where / "test_labels.csv")
    visual = train.assign(Path=[f"{_FULL}/{p.partition('/')[2]}" for p in train["Path"]])
    visual.to_csv(splits.train_csv, index=False)
    labeler.to_csv(splits.train_labeler_csv, index=False)
    valid.to_csv(splits.valid_csv, index=False)
    test.to_csv(splits.test_csv, index=False)
    return splits
