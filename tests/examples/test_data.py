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
    assert len(CheXpertDataset(splits.train_labeler_csv, splits.root)) > len(dataset)  # view 'all' by default
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
    """Missing study folders or images, and an empty selection, are reported in one line with the CSV, the count
    and the first missing path."""
    from chexpert_example.data import CheXpertDataset

    with pytest.raises(FileNotFoundError, match=r"^.*test_labels.csv: 6 of 6 study folders not found, the first: "
                       r".*CheXpert-v1.0/test/patient64741/study1$"):
        CheXpertDataset(splits.test_csv, tmp_path)
    frame = read_label_csv(splits.valid_csv)
    frame.loc[1, "Path"] = "CheXpert-v1.0/valid/patient99999/study1/view1_frontal.jpg"
    frame.to_csv(tmp_path / "gone.csv", index=False)
    with pytest.raises(FileNotFoundError, match=r"gone.csv: 1 of \d+ images not found, the first: .*patient99999"):
        CheXpertDataset(tmp_path / "gone.csv", splits.root)
    read_label_csv(splits.valid_csv, "frontal").head(0).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(ValueError, match=r"empty.csv: no lateral image left"):
        CheXpertDataset(tmp_path / "empty.csv", splits.root, view="lateral")


def test_visualchexbert_paths_are_read_from_the_small_layout(tmp_path: Path) -> None:
    """With only CheXpert-v1.0-small/ on disk, the VisualCheXbert file's CheXpert-v1.0/ paths and the test
    labels' studies are read from it; the dataset says so in ``layout_note``."""
    from chexpert_example.data import CheXpertDataset

    small = write_synthetic_chexpert(tmp_path, n_train=4, n_valid=2, n_test=2, image_height=32, seed=2,
                                     folder="CheXpert-v1.0-small")
    visual = CheXpertDataset(small.train_csv, tmp_path, view="all")
    labeler = CheXpertDataset(small.train_labeler_csv, tmp_path, view="all")
    assert visual.images == labeler.images and all("CheXpert-v1.0-small/train/" in p for p in visual.images)
    assert visual.relative_images()[0].startswith("CheXpert-v1.0-small/train/")
    assert visual.layout_note == f"CheXpert-v1.0/ entries read from {tmp_path}/CheXpert-v1.0-small/"
    assert labeler.layout_note is None
    test = CheXpertDataset(small.test_csv, tmp_path, view="all")
    assert len(test) >= 2 and all("CheXpert-v1.0-small/test/" in p for p in test.images)


def test_eval_transform_is_pixels_over_255_in_three_channels() -> None:
    """A constant image v becomes v / 255 in each of 3 channels (the reference), or ImageNet-normalised."""
    from chexpert_example.data import IMAGENET_MEAN, IMAGENET_STD, build_transform

    out = build_transform(48, train=False)(Image.new("L", (70, 60), color=200))
    assert out.shape == (3, 48, 48)
    torch.testing.assert_close(out, torch.full((3, 48, 48), 200 / 255))
    normed = build_transform(48, train=False, normalize="imagenet")(Image.new("L", (70, 60), color=200))
    for c in range(3):
        torch.testing.assert_close(normed[c], torch.full((48, 48), (200 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
    with pytest.raises(ValueError, match=r"normalize must be one of \('unit', 'imagenet'\), got 'max'"):
        build_transform(48, train=False, normalize="max")
    with pytest.raises(ValueError, match=r"augment must be one of .* got 'mixup'"):
        build_transform(48, train=True, augment="mixup")


def test_resize_is_bilinear_without_antialiasing_as_tf_image_resize() -> None:
    """The resize equals half-pixel-centre bilinear interpolation of the /255 image (tf.image.resize's default),
    not antialiased unless asked."""
    import torch.nn.functional as F
    from chexpert_example.data import build_transform

    pixels = np.random.default_rng(0).integers(0, 256, size=(97, 120), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="L")
    source = torch.from_numpy(pixels).double()[None, None] / 255
    expected = F.interpolate(source, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)[0, 0]
    out = build_transform(32, train=False)(image)
    torch.testing.assert_close(out[0].double(), expected, atol=1e-6, rtol=0)
    assert torch.equal(out[0], out[2])
    smoothed = build_transform(32, train=False, antialias=True)(image)
    assert (smoothed - out).abs().max() > 0.05


def test_reference_augment_flips_shifts_brightness_and_scales_contrast() -> None:
    """ReferenceAugment is flip LR, flip UD (each p = 0.5), + U(-0.1, 0.1), then (x − mean)·U(0.9, 1.1) + mean,
    from four uniform draws, written out here."""
    from chexpert_example.data import ReferenceAugment

    image = torch.rand(1, 6, 5)
    augment = ReferenceAugment()
    for seed in range(8):
        torch.manual_seed(seed)
        draws = torch.rand(4)
        expected = image.clone()
        if draws[0] < 0.5:
            expected = torch.flip(expected, dims=[2])
        if draws[1] < 0.5:
            expected = torch.flip(expected, dims=[1])
        expected = expected + (float(draws[2]) * 0.2 - 0.1)
        factor = 0.9 + 0.2 * float(draws[3])
        expected = (expected - expected.mean()) * factor + expected.mean()
        torch.manual_seed(seed)
        torch.testing.assert_close(augment(image), expected)


def test_train_transform_augments() -> None:
    """Both training augmentations change the image from draw to draw; 'none' equals the evaluation transform."""
    from chexpert_example.data import ROTATION_DEGREES, build_transform

    assert pytest.approx(18.0) == ROTATION_DEGREES  # ±5 % of a turn, as Keras' RandomRotation(0.05)
    pixels = np.zeros((40, 40), dtype=np.uint8)
    pixels[5:15, 5:30] = 255
    image = Image.fromarray(pixels, mode="L")
    torch.manual_seed(0)
    for augment in ("reference", "affine"):
        transform = build_transform(40, train=True, augment=augment)
        draws = [transform(image) for _ in range(4)]
        assert all(d.shape == (3, 40, 40) for d in draws)
        assert any(not torch.equal(draws[0], d) for d in draws[1:]), augment
    plain = build_transform(40, train=True, augment="none")
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
