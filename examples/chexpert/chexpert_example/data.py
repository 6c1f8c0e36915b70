"""The CheXpert image ``Dataset`` and the paper's augmentations (needs torchvision and Pillow)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from chexpert_example.labels import (
    UncertaintyPolicy,
    View,
    derive_targets,
    path_column,
    read_label_csv,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ROTATION_DEGREES",
    "CheXpertDataset",
    "Clahe",
    "build_transform",
    "clahe_available",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The paper's "±5 %" rotation, read as Keras's ``RandomRotation(0.05)``: a fraction of a full turn, ±18°.
ROTATION_DEGREES = 0.05 * 360.0
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def clahe_available() -> bool:
    """Whether OpenCV (needed by ``--clahe``) can be imported."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


class Clahe:
    """Contrast-limited adaptive histogram equalisation of a grayscale PIL image (OpenCV).

    Args:
        clip_limit: OpenCV's ``clipLimit``.
        tile_grid_size: OpenCV's ``tileGridSize`` (tiles per side).

    Raises:
        ImportError: if OpenCV is not installed (``pip install opencv-python-headless``).
    """

    def __init__(self, clip_limit: float = 2.0, tile_grid_size: int = 8) -> None:
        try:
            import cv2
        except ImportError as error:
            raise ImportError("--clahe needs OpenCV, which is not installed: pip install opencv-python-headless"
                              ) from error
        self._clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid_size, tile_grid_size))

    def __call__(self, image: Image.Image) -> Image.Image:
        return Image.fromarray(self._clahe.apply(np.asarray(image.convert("L"))))


def build_transform(image_size: int, train: bool, augment: bool = True, clahe: bool = False) -> v2.Compose:
    """The input pipeline: (CLAHE), resize, (flips, rotation, zoom, translation), 3 channels, ImageNet norm.

    The paper's augmentation is horizontal and vertical flips, rotation, zoom and translation of ±5 % each; this
    reads the percentages as Keras's preprocessing layers do: rotation ±0.05 of a full turn (±18°), zoom
    (scale) 0.95–1.05, translation ±5 % of the width and height.

    Args:
        image_size: the side of the square model input (the paper: 320).
        train: whether to add the random augmentations.
        augment: set ``False`` to train without augmentation.
        clahe: apply CLAHE first (needs OpenCV).
    """
    ops: list[Any] = []
    if clahe:
        ops.append(Clahe())
    ops.append(v2.Resize((image_size, image_size), antialias=True))
    if train and augment:
        ops += [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(degrees=ROTATION_DEGREES, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        ]
    ops += [
        v2.Grayscale(num_output_channels=3),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    return v2.Compose(ops)


def _study_images(study: Path, view: View) -> list[Path]:
    """The images of a study folder (``view1_frontal.jpg`` …), sorted, filtered by view."""
    if not study.is_dir():
        raise FileNotFoundError(f"study folder {study} (from the 'Study' column) does not exist")
    images = sorted(p for p in study.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if view != "all":
        images = [p for p in images if view in p.name.lower()]
    return images


class CheXpertDataset(Dataset[tuple[Tensor, Tensor]]):
    """CheXpert images with the paper's hierarchical targets.

    Args:
        csv_path: a CheXpert label CSV (``Path`` column: one image per row; ``Study`` column: every image of the
            study folder gets the study's labels).
        root: the folder the ``Path`` / ``Study`` entries are relative to (the one holding ``CheXpert-v1.0/``).
        view: ``'frontal'`` (the paper), ``'lateral'`` or ``'all'``.
        policy: uncertainty policy for ``-1`` labels, ``'ones'`` / ``'zeros'`` / ``'ignore'``; blanks are 0.
        with_uncertain: include the 'Uncertain' label (21 targets; else 20).
        transform: maps a PIL image to a ``(3, H, W)`` tensor (:func:`build_transform`).

    Attributes:
        frame: the label rows, one per image, with an ``image`` column of absolute paths.
        targets: ``(N, C)`` float32 tensor, NaN for targets to ignore.
        labels: the target names, ``chexpert(with_uncertain).labels``.

    Raises:
        ValueError: when no image is left after the view filter.
    """

    def __init__(self, csv_path: str | os.PathLike[str], root: str | os.PathLike[str], view: View = "frontal",
                 policy: UncertaintyPolicy = "zeros", with_uncertain: bool = True,
                 transform: Callable[[Image.Image], Tensor] | None = None) -> None:
        frame = read_label_csv(csv_path, view=view)
        base = Path(root)
        key = path_column(frame)
        if key == "Path":
            frame = frame.assign(image=[str(base / str(p)) for p in frame["Path"]])
        else:
            rows = [(i, str(image)) for i, study in enumerate(frame["Study"])
                    for image in _study_images(base / str(study), view)]
            positions = [i for i, _ in rows]
            frame = frame.iloc[positions].reset_index(drop=True).assign(image=[image for _, image in rows])
        if len(frame) == 0:
            raise ValueError(f"{os.fspath(csv_path)}: no {view} image left")
        targets = derive_targets(frame, policy, with_uncertain=with_uncertain)
        self.frame: pd.DataFrame = frame
        self.labels: tuple[str, ...] = tuple(targets.columns)
        self.targets: Tensor = torch.from_numpy(targets.to_numpy(np.float32, copy=True))
        self.target_frame: pd.DataFrame = targets
        self.transform = transform

    @property
    def images(self) -> Sequence[str]:
        """Absolute image paths, one per row."""
        return list(self.frame["image"])

    def __len__(self) -> int:
        return len(self.frame)

    def load_image(self, index: int) -> Image.Image:
        """The grayscale PIL image of row ``index``."""
        with Image.open(self.frame["image"].iat[index]) as image:
            return image.convert("L")

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.load_image(index)
        if self.transform is None:
            tensor = v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)
        else:
            tensor = self.transform(image)
        return tensor, self.targets[index]
