"""The CheXpert image ``Dataset`` and the input pipelines (needs torchvision and Pillow).

The reference pipeline (the-mercury/CIHMLC, ``src/data/chexpert_dataset.py``): decode, resize to 320 × 320
(``tf.image.resize``: bilinear, no antialiasing), divide by 255, then — for training *and* validation — random
left-right and up-down flips, brightness ``+ U(-0.1, 0.1)`` and contrast ``× U(0.9, 1.1)`` about the image mean;
the test set is not augmented. :func:`build_transform` reproduces it by default; the example's former pipeline
(flips plus an affine transform, ImageNet normalisation) is still available by flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from chexpert_example.labels import (
    UncertaintyPolicy,
    View,
    derive_targets,
    path_column,
    read_label_csv,
)
from chexpert_example.layout import missing_files_message, resolve_image_paths

__all__ = [
    "AUGMENTATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "ROTATION_DEGREES",
    "CheXpertDataset",
    "Clahe",
    "ReferenceAugment",
    "build_transform",
    "clahe_available",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``--augment`` choices: the reference's flips + brightness + contrast, the example's former flips + affine, none.
AUGMENTATIONS: tuple[str, ...] = ("reference", "affine", "none")
#: ``--normalize`` choices: pixels / 255 (the reference), or ImageNet mean and standard deviation after that.
NORMALIZATIONS: tuple[str, ...] = ("unit", "imagenet")
#: ``--augment affine``'s rotation: "±5 %" read as Keras's ``RandomRotation(0.05)``, a fraction of a turn, ±18°.
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


class ReferenceAugment(nn.Module):
    """The reference's training augmentation of a ``(C, H, W)`` float image in ``[0, 1]``.

    In this order, as ``tf.image``'s ops: left-right flip (p = 0.5), up-down flip (p = 0.5), brightness
    ``x + δ`` with ``δ ~ U(-brightness, brightness)``, contrast ``(x − mean) · f + mean`` with ``f ~ U(low, high)``
    and ``mean`` each channel's spatial mean. No clipping (as the reference). Draws from torch's global RNG.

    Args:
        brightness: the largest brightness shift (the reference: 0.1).
        contrast: ``(low, high)`` of the contrast factor (the reference: 0.9, 1.1).
    """

    def __init__(self, brightness: float = 0.1, contrast: tuple[float, float] = (0.9, 1.1)) -> None:
        super().__init__()
        self.brightness = brightness
        self.contrast = contrast

    def forward(self, image: Tensor) -> Tensor:
        draws = torch.rand(4)
        if draws[0] < 0.5:
            image = image.flip(-1)
        if draws[1] < 0.5:
            image = image.flip(-2)
        image = image + (2 * float(draws[2]) - 1) * self.brightness
        low, high = self.contrast
        factor = low + float(draws[3]) * (high - low)
        mean = image.mean(dim=(-2, -1), keepdim=True)
        return (image - mean) * factor + mean


class _ThreeChannels(nn.Module):
    """Repeat a one-channel ``(1, H, W)`` image into the three channels DenseNet takes."""

    def forward(self, image: Tensor) -> Tensor:
        return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


def build_transform(image_size: int, train: bool, augment: str = "reference", normalize: str = "unit",
                    antialias: bool = False, clahe: bool = False) -> v2.Compose:
    """The input pipeline from a grayscale PIL image to a ``(3, image_size, image_size)`` float tensor.

    ``(CLAHE) → pixels / 255 → resize (bilinear) → (augmentation) → 3 channels → (ImageNet normalisation)``.
    Resizing after the division equals the reference's resize-then-divide; without ``antialias`` it is
    ``tf.image.resize``'s bilinear interpolation (half-pixel centres, no antialiasing).

    Args:
        image_size: the side of the square model input (the reference: 320).
        train: whether to add the random augmentation.
        augment: ``'reference'`` (:class:`ReferenceAugment`), ``'affine'`` (flips, rotation ±18°, zoom 0.95–1.05,
            translation ±5 %), or ``'none'``.
        normalize: ``'unit'`` (pixels / 255, the reference) or ``'imagenet'`` (then ImageNet mean / std).
        antialias: antialias when downsizing (torchvision's default; the reference does not).
        clahe: apply CLAHE first (needs OpenCV).

    Raises:
        ValueError: on an unknown ``augment`` or ``normalize``.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    ops: list[Any] = [Clahe()] if clahe else []
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Resize((image_size, image_size), antialias=antialias)]
    if train and augment == "reference":
        ops.append(ReferenceAugment())
    elif train and augment == "affine":
        ops += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                v2.RandomAffine(degrees=ROTATION_DEGREES, translate=(0.05, 0.05), scale=(0.95, 1.05))]
    ops.append(_ThreeChannels())
    if normalize == "imagenet":
        ops.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(ops)


def _study_images(study: Path, view: View) -> list[Path]:
    """The images of a study folder (``view1_frontal.jpg`` …), sorted, filtered by view."""
    images = sorted(p for p in study.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if view != "all":
        images = [p for p in images if view in p.name.lower()]
    return images


class CheXpertDataset(Dataset[tuple[Tensor, Tensor]]):
    """CheXpert images with the paper's hierarchical targets.

    Args:
        csv_path: a CheXpert label CSV (``Path`` column: one image per row; ``Study`` column: every image of the
            study folder gets the study's labels).
        root: the folder the ``Path`` / ``Study`` entries are relative to (the one holding ``CheXpert-v1.0/`` or
            ``CheXpert-v1.0-small/``; entries of the other layout are read from the one present, see
            :func:`chexpert_example.layout.resolve_image_paths`).
        view: ``'all'`` (the reference), ``'frontal'`` or ``'lateral'``.
        policy: uncertainty policy for ``-1`` labels, ``'ones'`` / ``'zeros'`` / ``'ignore'`` / ``'ones-lsr'`` /
            ``'zeros-lsr'`` (soft targets drawn with ``seed``); blanks are 0.
        with_uncertain: include the 'Uncertain' label (21 targets; else 20).
        transform: maps a PIL image to a ``(3, H, W)`` tensor (:func:`build_transform`).
        seed: seed of the label-smoothing policies' draws.

    Attributes:
        frame: the label rows, one per image, with an ``image`` column of absolute paths.
        targets: ``(N, C)`` float32 tensor, NaN for targets to ignore.
        labels: the target names, ``chexpert_hierarchy(with_uncertain).labels``.
        layout_note: the layout remapping made for this CSV's entries (``None`` when none).

    Raises:
        FileNotFoundError: naming how many listed images (or study folders) are missing, and the first.
        ValueError: when no image is left after the view filter.
    """

    def __init__(self, csv_path: str | os.PathLike[str], root: str | os.PathLike[str], view: View = "all",
                 policy: UncertaintyPolicy = "zeros", with_uncertain: bool = True,
                 transform: Callable[[Image.Image], Tensor] | None = None, seed: int = 0) -> None:
        frame = read_label_csv(csv_path, view=view)
        key = path_column(frame)
        paths, self.layout_note = resolve_image_paths([str(p) for p in frame[key]], root)
        if key == "Path":
            message = missing_files_message(csv_path, paths)
            if message is not None:
                raise FileNotFoundError(message)
            frame = frame.assign(image=[str(p) for p in paths])
        else:
            message = missing_files_message(csv_path, paths, what="study folders", is_present=os.path.isdir)
            if message is not None:
                raise FileNotFoundError(message)
            rows = [(i, str(image)) for i, study in enumerate(paths) for image in _study_images(study, view)]
            frame = frame.iloc[[i for i, _ in rows]].reset_index(drop=True).assign(image=[image for _, image in rows])
        if len(frame) == 0:
            raise ValueError(f"{os.fspath(csv_path)}: no {view} image left")
        targets = derive_targets(frame, policy, with_uncertain=with_uncertain, seed=seed)
        self.root = Path(root)
        self.frame: pd.DataFrame = frame
        self.labels: tuple[str, ...] = tuple(targets.columns)
        self.targets: Tensor = torch.from_numpy(targets.to_numpy(np.float32, copy=True))
        self.target_frame: pd.DataFrame = targets
        self.transform = transform

    @property
    def images(self) -> Sequence[str]:
        """Absolute image paths, one per row."""
        return list(self.frame["image"])

    def relative_images(self) -> list[str]:
        """Image paths relative to ``root`` (as the CSVs write them), one per row."""
        return [Path(image).relative_to(self.root).as_posix() if Path(image).is_relative_to(self.root) else image
                for image in self.frame["image"]]

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

