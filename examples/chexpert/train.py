"""Train the paper's DenseNet121 on CheXpert with hierloss's losses (Asadi et al., 2025); see README.md.

    python examples/chexpert/train.py --data-root /data/chexpert --loss hbce-hard --penalty data --scale 0.5 \\
        --out runs/hbce-data
    python examples/chexpert/train.py --synthetic --epochs 1 --image-size 64 --out /tmp/chexpert-smoke

Writes ``OUT/last.pt`` and ``OUT/best.pt`` (checkpoints), ``OUT/metrics.json``, and with ``--mc-dropout N``
``OUT/mc_dropout.csv``, with ``--gradcam`` ``OUT/gradcam/<image>/<label>.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from chexpert_example.criterion import BCE_FAMILY, LOSSES, build_criterion, prediction_transform
from chexpert_example.labels import PENALTY_ESTIMATORS, POLICIES, VIEWS, fit_penalties
from torch.utils.data import DataLoader

import hierloss
from hierloss.hierarchies import chexpert

FOLDER = "CheXpert-v1.0"
# Settings that must match between a run and the checkpoint it resumes.
_RESUME_KEYS = ("loss", "penalty", "beta", "scale", "edge_reduction", "add_penalty", "uncertain_label",
                "uncertainty_policy", "view", "image_size", "pretrained", "dropout", "lr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", type=Path, help="folder the CSVs' Path entries are relative to (the one "
                      f"holding {FOLDER}/)")
    data.add_argument("--train-csv", type=Path, help=f"default: DATA_ROOT/{FOLDER}/train_visualCheXbert.csv")
    data.add_argument("--valid-csv", type=Path, help=f"default: DATA_ROOT/{FOLDER}/valid.csv")
    data.add_argument("--test-csv", type=Path, help="test labels ('Path' or 'Study' column); scored when given")
    data.add_argument("--view", choices=VIEWS, default="frontal", help="images used for training and validation")
    data.add_argument("--test-view", choices=VIEWS, help="images scored on the test set (default: --view)")
    data.add_argument("--uncertainty-policy", choices=POLICIES, default="zeros",
                      help="uncertain (-1) labels → 1, 0, or left out of the loss; blanks are always 0")
    data.add_argument("--uncertain-label", action=argparse.BooleanOptionalAction, default=True,
                      help="the 'Uncertain' output (21 outputs; --no-uncertain-label: 20)")
    data.add_argument("--image-size", type=int, default=320)
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                      help="flips, rotation, zoom and translation")
    data.add_argument("--clahe", action="store_true", help="CLAHE before resizing (needs opencv-python-headless)")
    data.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU, min(8, cores-1) on GPU)")
    data.add_argument("--synthetic", action="store_true",
                      help="write a tiny synthetic CheXpert into OUT/synthetic_data and train on it")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss", choices=LOSSES, default="hbce-hard",
                      help="hbce = HBCELoss's default trainable mode; hbce-hard = the paper's loss (trains as BCE)")
    loss.add_argument("--penalty", choices=PENALTY_ESTIMATORS, default="data",
                      help="edge penalties: data-driven (fitted on the training labels), fixed β, or shrunken")
    loss.add_argument("--beta", type=float, default=1.0, help="the fixed penalty β (--penalty fixed)")
    loss.add_argument("--scale", type=float, default=None,
                      help="λ, multiplies every penalty (default: hierloss's for the mode: 0.1 for the default "
                           "logit_hinge, 1.0 for the others)")
    loss.add_argument("--edge-reduction", choices=("sum", "mean"),
                      help="penalty over edges (default: sum for hbce-hard as the paper, else mean)")
    loss.add_argument("--add-penalty", choices=("hard", "soft", "hinge", "squared_hinge", "logit_hinge"),
                      help="add HierarchyPenalty in this mode to asl / focal / zlpr / msml / mcloss")

    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--pretrained", action="store_true", help="ImageNet weights (the paper: from scratch)")
    model.add_argument("--dropout", type=float, default=0.5)
    model.add_argument("--epochs", type=int, default=20)
    model.add_argument("--batch-size", type=int, default=16)
    model.add_argument("--lr", type=float, default=1e-4)
    model.add_argument("--lr-factor", type=float, default=0.1, help="ReduceLROnPlateau factor")
    model.add_argument("--lr-patience", type=int, default=1, help="ReduceLROnPlateau patience (epochs)")
    model.add_argument("--early-stopping", type=int, default=3, help="patience (epochs) on valid weighted AUROC")
    model.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                       help="float16 autocast + gradient scaling (CUDA only)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--max-batches", type=int, help="cap batches per epoch and per evaluation (smoke runs)")
    model.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)

    run = parser.add_argument_group("output and inference")
    run.add_argument("--out", type=Path, required=True, help="output folder")
    run.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                     help="continue from a last.pt (default: OUT/last.pt)")
    run.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                     help="N Monte Carlo dropout passes on the test (else validation) set → OUT/mc_dropout.csv")
    run.add_argument("--gradcam", nargs="*", type=Path, metavar="IMAGE",
                     help="Grad-CAM PNGs per label into OUT/gradcam/; no IMAGE: the first --gradcam-count "
                     "test (else validation) images")
    run.add_argument("--gradcam-count", type=int, default=2)
    args = parser.parse_args(argv)

    if args.synthetic:
        if args.data_root is not None:
            parser.error("--synthetic writes its own data; drop --data-root")
        args.data_root = args.out / "synthetic_data"
        args.test_csv = args.data_root / FOLDER / "test_labels.csv"
        if args.gradcam is None:
            args.gradcam, args.gradcam_count = [], 1
    elif args.data_root is None:
        parser.error("give --data-root (the folder the CSVs' paths are relative to), or --synthetic")
    args.train_csv = args.train_csv or args.data_root / FOLDER / "train_visualCheXbert.csv"
    args.valid_csv = args.valid_csv or args.data_root / FOLDER / "valid.csv"
    if args.add_penalty is not None and args.loss in BCE_FAMILY:
        parser.error(f"--add-penalty is for the non-BCE losses; --loss {args.loss} has its penalty built in")
    if args.image_size < 32:
        parser.error(f"--image-size must be >= 32 (DenseNet downsamples 32×), got {args.image_size}")
    if args.mc_dropout < 0:
        parser.error(f"--mc-dropout must be >= 0, got {args.mc_dropout}")
    if args.resume == "":
        args.resume = args.out / "last.pt"
    elif args.resume is not None:
        args.resume = Path(args.resume)
    if args.clahe:
        from chexpert_example.data import clahe_available

        if not clahe_available():
            parser.error("--clahe needs OpenCV, which is not installed: pip install opencv-python-headless")
    return args


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _json_ready(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _check_resume_config(checkpoint: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    old = checkpoint.get("config", {})
    changed = [key for key in _RESUME_KEYS if key in old and old[key] != config[key]]
    if changed:
        details = ", ".join(f"{key}: {old[key]!r} → {config[key]!r}" for key in changed)
        raise SystemExit(f"--resume {path}: the checkpoint was trained with other settings ({details})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    began = time.perf_counter()
    args = parse_args(argv)
    # torchvision is imported here, after argument checks, so that --help works without it.
    from chexpert_example.data import CheXpertDataset, build_transform
    from chexpert_example.evaluation import score
    from chexpert_example.gradcam import write_gradcam_pngs
    from chexpert_example.inference import mc_dropout, write_mc_dropout_csv
    from chexpert_example.model import CheXpertDenseNet
    from chexpert_example.train_loop import BEST, TrainConfig, fit, load_checkpoint, predict

    random.seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 - seeds any code that still draws from the global NumPy RNG
    torch.manual_seed(args.seed)
    device = _device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        from chexpert_example.synthetic import write_synthetic_chexpert

        write_synthetic_chexpert(args.data_root, seed=args.seed)
    workers = args.workers if args.workers is not None else (
        min(8, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else 0)

    hierarchy = chexpert(uncertain=args.uncertain_label)
    dataset_args = {"root": args.data_root, "view": args.view, "policy": args.uncertainty_policy,
                    "with_uncertain": args.uncertain_label}
    eval_transform = build_transform(args.image_size, train=False, clahe=args.clahe)
    train_set = CheXpertDataset(args.train_csv, transform=build_transform(
        args.image_size, train=True, augment=args.augment, clahe=args.clahe), **dataset_args)
    valid_set = CheXpertDataset(args.valid_csv, transform=eval_transform, **dataset_args)
    test_set = CheXpertDataset(args.test_csv, transform=eval_transform, **{
        **dataset_args, "view": args.test_view or args.view}) if args.test_csv else None
    print(f"{len(train_set)} training, {len(valid_set)} validation"
          + (f", {len(test_set)} test" if test_set is not None else "") + " images; "
          f"{hierarchy.num_labels} outputs; device {device}", flush=True)

    penalties = fit_penalties(train_set.target_frame, hierarchy, args.penalty, args.beta)
    criterion = build_criterion(args.loss, hierarchy, penalties, args.scale, args.edge_reduction, args.add_penalty)
    postprocess = prediction_transform(args.loss, hierarchy)
    model = CheXpertDenseNet(hierarchy.num_labels, pretrained=args.pretrained, dropout=args.dropout)

    loader_args: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda",
                                   "persistent_workers": workers > 0}
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, drop_last=len(train_set) > args.batch_size,
                              generator=generator, **loader_args)
    valid_loader = DataLoader(valid_set, args.batch_size, **loader_args)
    test_loader = DataLoader(test_set, args.batch_size, **loader_args) if test_set is not None else None

    config = {key: _json_ready(value) for key, value in vars(args).items()}
    if args.resume is not None:
        _check_resume_config(load_checkpoint(args.resume), config, args.resume)
    train_config = TrainConfig(epochs=args.epochs, lr=args.lr, lr_factor=args.lr_factor,
                               lr_patience=args.lr_patience, early_stopping=args.early_stopping, amp=args.amp,
                               progress=args.progress, max_batches=args.max_batches)
    metadata = {"config": config, "penalties": penalties.to_dict()}
    result = fit(model, criterion, train_loader, valid_loader, hierarchy, train_config, args.out, device,
                 resume=args.resume, metadata=metadata, postprocess=postprocess)

    best_path = args.out / BEST
    if best_path.exists():
        model.load_state_dict(load_checkpoint(best_path, device)["model"])
    model.to(device).eval()
    splits = {"valid": valid_loader, **({"test": test_loader} if test_loader is not None else {})}
    scores = {}
    for split, loader in splits.items():
        probs, targets, loss = predict(model, loader, device, args.amp, criterion.to(device), args.progress,
                                       args.max_batches, desc=split, postprocess=postprocess)
        scores[split] = score(probs, targets, hierarchy, loss).as_dict()
    reported = "test" if "test" in scores else "valid"
    inference_set, inference_loader = (test_set, test_loader) if test_set is not None else (valid_set, valid_loader)

    mc_summary = None
    if args.mc_dropout > 0:
        mean, std, targets = mc_dropout(model, inference_loader, args.mc_dropout, device, args.progress,
                                        args.max_batches, postprocess)
        csv_path = args.out / "mc_dropout.csv"
        write_mc_dropout_csv(csv_path, inference_set.images[:len(mean)], hierarchy.labels, mean, std)
        mc_scores = score(mean, targets, hierarchy).as_dict()
        mc_summary = {"passes": args.mc_dropout, "split": reported, "csv": str(csv_path),
                      "weighted_auroc": mc_scores["weighted_auroc"], "violation_rate": mc_scores["violation_rate"],
                      "mean_std": float(std.mean())}

    gradcam_index = []
    if args.gradcam is not None:
        from PIL import Image

        if args.gradcam:
            jobs = [(Image.open(path).convert("L"), path.stem, str(path)) for path in args.gradcam]
        else:
            jobs = [(inference_set.load_image(i), Path(path).relative_to(args.data_root).with_suffix("").as_posix(),
                     path) for i, path in enumerate(inference_set.images[:args.gradcam_count])]
        for gray, name, source in jobs:
            for label, prob, png in write_gradcam_pngs(model, eval_transform(gray), gray, hierarchy.labels,
                                                       args.out / "gradcam", name):
                gradcam_index.append({"image": source, "label": label, "probability": prob, "png": str(png)})
        (args.out / "gradcam" / "index.json").write_text(json.dumps(gradcam_index, indent=1))

    import torchvision

    metrics = {
        "split": reported,
        **{key: scores[reported][key] for key in ("weighted_auroc", "per_label_auroc", "violation_rate",
                                                 "violation_rate_any_threshold", "loss")},
        "valid": scores["valid"],
        "test": scores.get("test"),
        "best_epoch": result["best_epoch"],
        "stopped_early": result["stopped_early"],
        "history": result["history"],
        "mc_dropout": mc_summary,
        "gradcam": len(gradcam_index),
        "penalties": {f"{parent} -> {child}": value for (parent, child), value in penalties.as_mapping().items()},
        "config": {**config, "labels": list(hierarchy.labels), "device": str(device), "workers": workers},
        "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "hierloss": hierloss.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "cuda": torch.cuda.get_device_name(device)
                        if device.type == "cuda" else None},
        "seconds": time.perf_counter() - began,
    }
    metrics = _json_ready(metrics)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"{reported} weighted AUROC {metrics['weighted_auroc']}, violation rate {metrics['violation_rate']}; "
          f"wrote {args.out / 'metrics.json'} ({metrics['seconds']:.1f} s)", flush=True)
    return metrics


if __name__ == "__main__":
    main()
