"""Tests for examples/chexpert/score.py on the reference's published predictions (core environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chexpert"


@pytest.fixture(scope="module")
def reference_predictions(shared_data: Path) -> Path:
    """The reference model's own test predictions (skips when ../shared/data lacks them)."""
    path = shared_data / "chexpert" / "cihmlc_test_predictions.csv"
    if not path.is_file():
        pytest.skip(f"reference predictions not found: {path}")
    return path


def score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE / "score.py"), *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_reference_predictions_score_the_papers_auroc(reference_predictions: Path, tmp_path: Path) -> None:
    """The reference's 668 test predictions give the paper's 0.9034; its 518 frontal images give 0.8982;
    --out writes scores.json, the ROC curves and the reliability diagrams."""
    labels = reference_predictions.with_name("test_groundtruth.csv")
    result = score(str(reference_predictions), "--labels", str(labels), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("weighted AUROC 0.9034  (668 images of 500 studies;")
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["images"] == 668 and round(report["weighted_auroc"], 4) == 0.9034
    assert len(report["per_label_auroc"]) == 21 and len(report["ece"]) == 21
    assert 0 < report["violation_rate"] < report["violation_rate_any_threshold"] < 1
    for name in ("roc_curves.png", "reliability.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
    assert set(json.loads((tmp_path / "calibration.json").read_text())["labels"]) == set(report["ece"])
    frontal = score(str(reference_predictions), "--labels", str(labels), "--view", "frontal")
    assert frontal.returncode == 0, frontal.stderr[-2000:]
    assert frontal.stdout.startswith("weighted AUROC 0.8982  (518 frontal images of 500 studies;")


def test_score_errors_are_one_line(reference_predictions: Path, tmp_path: Path) -> None:
    """A missing file, and predictions without a label row, fail with one line naming the offender."""
    labels = reference_predictions.with_name("test_groundtruth.csv")
    missing = score(str(tmp_path / "none.csv"), "--labels", str(labels))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"score.py: error: PREDICTIONS.csv {tmp_path / 'none.csv'}: no such file"
    frame = pd.read_csv(reference_predictions).head(3)
    frame.loc[2, "Path"] = "test/patient99999/study1/view1_frontal.jpg"
    frame.to_csv(tmp_path / "p.csv", index=False)
    unmatched = score(str(tmp_path / "p.csv"), "--labels", str(labels))
    assert unmatched.returncode == 1 and len(unmatched.stderr.strip().splitlines()) == 1
    assert "no label row for 1 of 3 predicted images, the first: test/patient99999/study1/view1_frontal.jpg" in (
        unmatched.stderr)
