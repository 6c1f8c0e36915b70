"""Score a CheXpert predictions CSV: weighted AUROC, per-label AUROC, violation rates, ROC curves, calibration.

    python examples/chexpert/score.py ../shared/data/chexpert/cihmlc_test_predictions.csv \\
        --labels ../shared/data/chexpert/test_groundtruth.csv --out scores/
    python examples/chexpert/score.py runs/reference/predictions.csv --labels test_groundtruth.csv --view frontal

PREDICTIONS.csv has a ``Path`` column and one probability column per label, ``<label>_Pred`` (the reference's
published format, and what ``train.py`` writes) or ``<label>``; 21 labels with 'Uncertain', else 20. Targets come
from GROUNDTRUTH.csv (one row per image, ``Path``; or per study, ``Study``, as ``test_groundtruth.csv``), derived
as ``train.py`` derives them. ``--out DIR`` writes ``scores.json``, ``roc_curves.png``, ``calibration.json`` and
``reliability.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
import torch
from chexpert_example.calibration import calibration_report
from chexpert_example.evaluation import score
from chexpert_example.labels import VIEWS
from chexpert_example.predictions import match_targets, read_predictions, study_key

from hierloss.datasets import chexpert_hierarchy


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"score.py: error: {message}")


def _view_of(path: str) -> str:
    name = Path(path).name.lower()
    return "frontal" if "frontal" in name else "lateral" if "lateral" in name else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, metavar="PREDICTIONS.csv")
    parser.add_argument("--labels", type=Path, required=True, metavar="GROUNDTRUTH.csv",
                        help="the label CSV the targets are derived from ('Path' or 'Study' column)")
    parser.add_argument("--view", choices=VIEWS, default="all", help="score these images only")
    parser.add_argument("--uncertainty-policy", choices=("zeros", "ones"), default="zeros",
                        help="uncertain (-1) labels in GROUNDTRUTH.csv → 0 or 1 (blanks are 0)")
    parser.add_argument("--calibration-bins", type=int, default=10)
    parser.add_argument("--out", type=Path, help="write scores.json, roc_curves.png, calibration.json, "
                                                 "reliability.png here")
    args = parser.parse_args(argv)
    for flag, path in (("PREDICTIONS.csv", args.predictions), ("--labels", args.labels)):
        if not path.is_file():
            _fail(f"{flag} {path}: no such file")
    if args.calibration_bins < 1:
        parser.error(f"--calibration-bins must be >= 1, got {args.calibration_bins}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    header = pd.read_csv(args.predictions, nrows=0).columns
    hierarchy = chexpert_hierarchy(uncertain_label="Uncertain_Pred" in header or "Uncertain" in header)
    labels = list(hierarchy.labels)
    try:
        images, probs = read_predictions(args.predictions, labels)
        targets = match_targets(images, args.labels, labels, args.uncertainty_policy)
    except ValueError as error:
        _fail(str(error))
    if args.view != "all":
        keep = np.array([_view_of(image) == args.view for image in images])
        if not keep.any():
            _fail(f"{args.predictions}: no {args.view} image")
        images, probs, targets = [i for i, k in zip(images, keep) if k], probs[keep], targets[keep]
    scores = score(torch.tensor(probs), torch.tensor(targets), hierarchy)
    positives = targets.sum(0)
    calibration = calibration_report(probs, targets, labels, args.calibration_bins)
    studies = len({study_key(image) for image in images})

    def shown(value: float | None) -> str:
        return "   n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"

    shown_view = "" if args.view == "all" else f"{args.view} "
    print(f"weighted AUROC {scores.weighted_auroc:.4f}  ({len(images)} {shown_view}images of {studies} studies; "
          f"{args.predictions.name} against {args.labels.name})")
    print(f"macro AUROC    {scores.macro_auroc:.4f}")
    print(f"violation rate {scores.violation_rate:.4f} (some edge p_parent < 0.5 < p_child), "
          f"{scores.violation_rate_any_threshold:.4f} (some edge p_child > p_parent)")
    print(f"mean ECE       {calibration['mean_ece']:.4f} ({args.calibration_bins} bins)")
    width = max(len(label) for label in labels)
    print(f"{'label':<{width}}  AUROC  positives  ECE")
    for j, label in enumerate(labels):
        ece = calibration["labels"][label]["ece"]
        print(f"{label:<{width}}  {shown(scores.per_label_auroc[label])}  {int(positives[j]):9d}  {shown(ece)}")
    report = {"predictions": str(args.predictions), "labels": str(args.labels), "view": args.view,
              "images": len(images), "studies": studies, **scores.as_dict(),
              "positives": {label: int(positives[j]) for j, label in enumerate(labels)},
              "ece": {label: calibration["labels"][label]["ece"] for label in labels},
              "mean_ece": calibration["mean_ece"]}
    if args.out is not None:
        from chexpert_example.plots import plot_reliability, plot_roc_curves

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scores.json").write_text(json.dumps(report, indent=1))
        (args.out / "calibration.json").write_text(json.dumps(calibration, indent=1))
        plot_roc_curves(probs, targets, labels, scores.per_label_auroc, args.out / "roc_curves.png",
                        f"{args.predictions.name}: weighted AUROC {scores.weighted_auroc:.4f} ({len(images)} images)")
        plot_reliability(calibration, args.out / "reliability.png", f"{args.predictions.name}: reliability")
        print(f"wrote {args.out / 'scores.json'}, roc_curves.png, calibration.json, reliability.png")
    return report


if __name__ == "__main__":
    main()
