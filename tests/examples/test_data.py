"""Tests for chexpert_example.data: the image Dataset on the synthetic CheXpert, and the transforms."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from chexpert_example.labels import derive_targets, read_label_csv
from chexpert_example.synthetic import SyntheticSplits, write_synthetic_chexpert
from PIL import Image

pytestmark = pytest.mark.examples


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSplits:
    return write_synthetic_chexpert(tmp_path_factory.mktemp("chexpert"), n_train=12, n_valid=4, n_test=6,
                                    image_height=40, lateral_fraction=0.5, seed=1)


def test_path_csv_dataset_filters_views_and_derives_targets(splits: SyntheticSplits) -> None:
    """A 'Path' CSV gives one item per kept image, with derive_targets' targets and absolute image paths."""
    from chexpert_example.data import CheXpertDataset, build_transform

    dataset = CheXpertDataset(splits.train_labeler_csv, splits.root, view="frontal", policy="ignore",
                              transform=build_transform(32, train=False))
    frame = read_label_csv(splits.train_labeler_csv, "frontal")
    assert len(dataset) == len(frame) == 12
    expected = derive_targets(frame, "ignore").to_numpy()
    np.testing.assert_array_equal(dataset.targets.numpy(), expected)
    assert np.isnan(expected).any()  # the labeler file's -1s are left out
    assert dataset.images == [str(splits.root / p) for p in frame["Path"]]
    image, target = dataset[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    torch.testing.assert_close(target, dataset.targets[3], equal_nan=True)
    everything = CheXpertDataset(splits.train_labeler_csv, splits.root, view="all", policy="zeros",
                                 with_uncertain=False)
    assert len(everything) == len(read_label_csv(splits.train_labeler_csv)) > 12
    assert everything.labels[-6:] == ("Abnormal", "Cardiac", "Fluid Accumulation", "Missing Lung Tissue", "Opacity",
                                      "Other") and "Uncertain" not in everything.labels


def test_study_csv_dataset_lists_the_images_of_each_study(splits: SyntheticSplits) -> None:
    """A 'Study' CSV (the test-set format) gives every image of each study folder, filtered by view."""
    from chexpert_example.data import CheXpertDataset

    frontal = CheXpertDataset(splits.test_csv, splits.root, view="frontal")
    everything = CheXpertDataset(splits.test_csv, splits.root, view="all")
    studies = read_label_csv(splits.test_csv)
    n_images = sum(len(list((splits.root / s).glob("*.jpg"))) for s in studies["Study"])
    assert len(frontal) == 6 and len(everything) == n_images > 6
    assert all(path.endswith("view1_frontal.jpg") for path in frontal.images)
    row = {Path(p).parent.name + Path(p).parents[1].name: i for i, p in enumerate(frontal.images)}
    assert len(row) == 6
    expected = derive_targets(studies, "zeros").to_numpy()
    np.testing.assert_array_equal(frontal.targets.numpy(), expected)


def test_dataset_errors(splits: SyntheticSplits, tmp_path: Path) -> None:
    """A missing study folder and an empty selection are reported with the path."""
    from chexpert_example.data import CheXpertDataset

    with pytest.raises(FileNotFoundError, match=r"study folder .*patient64741/study1 .* does not exist"):
        CheXpertDataset(splits.test_csv, tmp_path)
    read_label_csv(splits.valid_csv, "frontal").head(0).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(ValueError, match=r"empty.csv: no lateral image left"):
        CheXpertDataset(tmp_path / "empty.csv", splits.root, view="lateral")


def test_eval_transform_is_resize_gray_to_rgb_and_imagenet_normalisation() -> None:
    """A constant image v becomes (v/255 − mean_c)/std_c in each of 3 channels at the requested size."""
    from chexpert_example.data import IMAGENET_MEAN, IMAGENET_STD, build_transform

    out = build_transform(48, train=False)(Image.new("L", (70, 60), color=200))
    assert out.shape == (3, 48, 48)
    for c in range(3):
        torch.testing.assert_close(out[c], torch.full((48, 48), (200 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


def test_train_transform_augments() -> None:
    """The training transform flips/rotates/zooms/shifts: two draws of an asymmetric image differ."""
    from chexpert_example.data import ROTATION_DEGREES, build_transform

    assert pytest.approx(18.0) == ROTATION_DEGREES  # ±5 % of a turn, as Keras' RandomRotation(0.05)
    pixels = np.zeros((40, 40), dtype=np.uint8)
    pixels[5:15, 5:30] = 255
    image = Image.fromarray(pixels, mode="L")
    transform = build_transform(40, train=True)
    torch.manual_seed(0)
    draws = [transform(image) for _ in range(4)]
    assert all(d.shape == (3, 40, 40) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    plain = build_transform(40, train=True, augment=False)
    assert torch.equal(plain(image), build_transform(40, train=False)(image))


def test_clahe_without_opencv_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """--clahe needs OpenCV; without it the error names the package to install."""
    from chexpert_example.data import Clahe, build_transform, clahe_available

    monkeypatch.setitem(sys.modules, "cv2", None)
    assert not clahe_available()
    with pytest.raises(ImportError, match=r"pip install opencv-python-headless"):
        Clahe()
    with pytest.raises(ImportError, match=r"--clahe needs OpenCV"):
        build_transform(32, train=False, clahe=True)
