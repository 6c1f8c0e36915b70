"""Train the paper's DenseNet121 on CheXpert with hierloss's losses (Asadi et al., 2025); see README.md.

Without tuning flags this is the reference run (the-mercury/CIHMLC at 08c0102): every view, the reference's
augmentation and pixel scaling, head, initialisation and optimiser, validation loss monitored, 100 epochs with
early stopping, fp32, 10 Monte Carlo dropout passes on the test set.

    python examples/chexpert/train.py --data-root /data/chexpert --test-csv /data/chexpert/test_groundtruth.csv \\
        --out runs/reference
    torchrun --nproc_per_node 4 examples/chexpert/train.py --data-root /data/chexpert ... --out runs/ddp
    python examples/chexpert/train.py --synthetic --epochs 1 --image-size 64 --out /tmp/chexpert-smoke

Writes into OUT: ``last.pt``, ``best_loss.pt`` and ``best_auroc.pt`` (checkpoints), ``metrics.json``,
``predictions.csv`` (the reference's ``Path`` / ``<label>_GT`` / ``<label>_Pred`` columns, ``<label>_Std`` after
MC dropout), ``mc_dropout.csv``, ``calibration.json`` and ``reliability*.png``, and with ``--gradcam``
``gradcam/<image>/<label>.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from chexpert_example.criterion import BCE_FAMILY, LOSSES, build_criterion, prediction_transform
from chexpert_example.distributed import Indexed, Processes, ShardSampler, barrier, init_from_environment, shutdown
from chexpert_example.evaluation import AUROC_AVERAGES
from chexpert_example.labels import (
    PENALTY_ESTIMATORS,
    POLICIES,
    VIEWS,
    derive_targets,
    fit_penalties,
    hard_policy,
)
from chexpert_example.layout import LAYOUTS, TRAIN_LABELS, default_data_files
from chexpert_example.train_loop import MONITORS
from torch.utils.data import DataLoader, DistributedSampler

import hierloss
from hierloss.datasets import chexpert_hierarchy

#: The reference's random seed (``src/train.py``).
REFERENCE_SEED = 2408
#: ``--synthetic``: training, validation and test studies (a quarter of them also get a lateral image).
SYNTHETIC_STUDIES = (32, 16, 12)
# Settings that must match between a run and the checkpoint it resumes.
_RESUME_KEYS = ("loss", "penalty", "beta", "scale", "edge_reduction", "add_penalty", "uncertain_label",
                "uncertainty_policy", "view", "image_size", "pretrained", "weights", "init_from", "init", "batchnorm",
                "dropout",
                "lr", "adam_eps", "augment", "augment_valid", "normalize", "antialias", "monitor", "auroc_average")


def _fail(message: str) -> NoReturn:
    """Stop with a one-line error on standard error (exit status 1)."""
    raise SystemExit(f"train.py: error: {message}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", type=Path, help="the folder holding CheXpert-v1.0/ or CheXpert-v1.0-small/ "
                      "(the CSVs' paths are relative to it)")
    data.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto",
                      help="the layout folder of the default CSVs (auto: the one DATA_ROOT holds)")
    data.add_argument("--train-labels", choices=tuple(TRAIN_LABELS), default="visualchexbert",
                      help="default training CSV: train_visualCheXbert.csv (the reference) or the labeler's "
                           "train.csv")
    data.add_argument("--train-csv", type=Path, help="training labels (default: see --train-labels)")
    data.add_argument("--valid-csv", type=Path, help="validation labels (default: LAYOUT/valid.csv)")
    data.add_argument("--test-csv", type=Path,
                      help="test labels ('Path' or 'Study' column, e.g. test_groundtruth.csv); scored when given")
    data.add_argument("--view", choices=VIEWS, default="all", help="images used for training and validation")
    data.add_argument("--test-view", choices=VIEWS, help="images scored on the test set (default: --view)")
    data.add_argument("--uncertainty-policy", choices=POLICIES, default="zeros",
                      help="uncertain (-1) labels → 1, 0, or left out of the loss; blanks are always 0")
    data.add_argument("--uncertain-label", action=argparse.BooleanOptionalAction, default=True,
                      help="the 'Uncertain' output (21 outputs; --no-uncertain-label: 20)")
    data.add_argument("--image-size", type=int, default=320)
    data.add_argument("--augment", choices=("reference", "affine", "none"), default="reference",
                      help="training augmentation: the reference's flips + brightness + contrast, flips + affine, "
                           "or none")
    data.add_argument("--augment-valid", action=argparse.BooleanOptionalAction, default=True,
                      help="augment the validation images that steer training too, as the reference")
    data.add_argument("--normalize", choices=("unit", "imagenet"), default="unit",
                      help="pixels / 255 (the reference), or then ImageNet mean and std")
    data.add_argument("--antialias", action="store_true",
                      help="antialias when resizing (the reference's tf.image.resize does not)")
    data.add_argument("--clahe", action="store_true", help="CLAHE before resizing (needs opencv-python-headless)")
    data.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU, min(8, cores-1) on GPU)")
    data.add_argument("--synthetic", action="store_true",
                      help="write a tiny synthetic CheXpert into OUT/synthetic_data and train on it")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss", choices=LOSSES, default="hbce-hard",
                      help="hbce-hard = the paper's loss (trains as BCE); hbce = HBCELoss's default trainable mode")
    loss.add_argument("--penalty", choices=PENALTY_ESTIMATORS, default="data",
                      help="edge weights w_e (the paper's penalties): data-driven (fitted on the training labels), "
                           "fixed β, or shrunken")
    loss.add_argument("--beta", type=float, default=1.0, help="the fixed penalty β (--penalty fixed)")
    loss.add_argument("--scale", type=float, default=None,
                      help="λ, multiplies every penalty (default: hierloss's for the mode: 1.0 for hard, as the "
                           "reference, 0.1 for the logit hinge)")
    loss.add_argument("--edge-reduction", choices=("sum", "mean"),
                      help="penalty over edges (default: sum for hbce-hard as the paper, else mean)")
    loss.add_argument("--add-penalty", choices=("hard", "soft", "hinge", "squared_hinge", "logit_hinge"),
                      help="add HierarchyPenalty in this mode to asl / focal / zlpr / msml / mcloss")

    model = parser.add_argument_group("model and optimisation")
    start = model.add_mutually_exclusive_group()
    start.add_argument("--pretrained", action="store_true",
                       help="torchvision's ImageNet weights, downloaded unless cached (the reference: from scratch)")
    start.add_argument("--weights", type=Path, metavar="PATH",
                       help="start DenseNet121 from this local state dict (e.g. densenet121-a639ec97.pth)")
    start.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                       help="start from the model of an earlier run's checkpoint (its best_loss.pt, best_auroc.pt "
                            "or last.pt), e.g. --loss chain-rule-bce fine-tuning a --loss conditional run")
    model.add_argument("--init", choices=("keras", "torch"), default="keras",
                       help="initialisation: Keras's Glorot-uniform (the reference) or PyTorch's")
    model.add_argument("--batchnorm", choices=("keras", "torch"), default="keras",
                       help="BatchNorm momentum and ε: Keras's (the reference) or PyTorch's")
    model.add_argument("--dropout", type=float, default=0.5)
    model.add_argument("--epochs", type=int, default=100)
    model.add_argument("--batch-size", type=int, default=16, help="images per step over all processes")
    model.add_argument("--lr", type=float, default=1e-4)
    model.add_argument("--adam-eps", type=float, default=1e-7, help="Adam's ε (Keras's; PyTorch's is 1e-8)")
    model.add_argument("--monitor", choices=MONITORS, default="loss",
                       help="validation value for the learning rate, early stopping and the final model")
    model.add_argument("--auroc-average", choices=AUROC_AVERAGES, default="macro",
                       help="validation AUROC over labels (macro: the reference's Keras AUC)")
    model.add_argument("--lr-factor", type=float, default=0.9, help="ReduceLROnPlateau factor")
    model.add_argument("--lr-patience", type=int, default=1, help="ReduceLROnPlateau patience (Keras's meaning)")
    model.add_argument("--lr-min-delta", type=float, default=1e-4, help="ReduceLROnPlateau min_delta")
    model.add_argument("--min-lr", type=float, default=1e-8)
    model.add_argument("--early-stopping", type=int, default=10, help="patience (epochs) on the monitored value")
    model.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                       help="float16 autocast + gradient scaling (CUDA only; the reference: fp32)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    model.add_argument("--seed", type=int, default=REFERENCE_SEED)
    model.add_argument("--max-batches", type=int, help="cap batches per epoch and per evaluation (smoke runs)")
    model.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)

    run = parser.add_argument_group("output and inference")
    run.add_argument("--out", type=Path, required=True, help="output folder")
    run.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                     help="continue from a last.pt (default: OUT/last.pt)")
    run.add_argument("--evaluate", type=Path, metavar="CHECKPOINT",
                     help="no training: evaluate this checkpoint (a best_loss.pt, best_auroc.pt or last.pt)")
    run.add_argument("--mc-dropout", type=int, default=10, metavar="N",
                     help="N Monte Carlo dropout passes on the test (else validation) set; 0: none")
    run.add_argument("--mc-dropout-batchnorm", choices=("inference", "training"), default="inference",
                     help="BatchNorm during the passes (inference: as the reference's frozen Keras model)")
    run.add_argument("--calibration-bins", type=int, default=10, help="bins of the reliability diagrams and ECE")
    run.add_argument("--gradcam", nargs="*", type=Path, metavar="IMAGE",
                     help="Grad-CAM PNGs per label into OUT/gradcam/; no IMAGE: the first --gradcam-count "
                     "test (else validation) images")
    run.add_argument("--gradcam-count", type=int, default=2)
    run.add_argument("--gradcam-target", choices=("probability", "logit"), default="probability",
                     help="differentiate the sigmoid output (the reference) or the logit")
    run.add_argument("--gradcam-clip", type=float, default=0.5, help="heat at or below this is not drawn")
    args = parser.parse_args(argv)

    if args.synthetic:
        if args.data_root is not None:
            parser.error("--synthetic writes its own data; drop --data-root")
        args.data_root = args.out / "synthetic_data"
        args.test_csv = args.test_csv or args.data_root / LAYOUTS[0] / "test_labels.csv"
        if args.gradcam is None:
            args.gradcam, args.gradcam_count = [], 1
    elif args.data_root is None:
        parser.error("give --data-root (the folder the CSVs' paths are relative to), or --synthetic")
    if args.add_penalty is not None and args.loss in BCE_FAMILY:
        parser.error(f"--add-penalty is for the non-BCE losses; --loss {args.loss} has its penalty built in")
    if args.image_size < 32:
        parser.error(f"--image-size must be >= 32 (DenseNet downsamples 32×), got {args.image_size}")
    for name in ("mc_dropout", "epochs"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("lr_patience", "early_stopping", "batch_size", "calibration_bins"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.evaluate is not None and args.resume is not None:
        parser.error("--evaluate scores a checkpoint without training; drop --resume")
    if args.evaluate is not None and args.init_from is not None:
        parser.error("--evaluate scores a checkpoint without training; drop --init-from")
    if args.resume == "":
        args.resume = args.out / "last.pt"
    elif args.resume is not None:
        args.resume = Path(args.resume)
    if args.clahe:
        from chexpert_example.data import clahe_available

        if not clahe_available():
            parser.error("--clahe needs OpenCV, which is not installed: pip install opencv-python-headless")
    return args


def _check_files(args: argparse.Namespace) -> None:
    """One-line errors for every file the run needs and lacks (the data CSVs are checked when they are read)."""
    for flag, path in (("--weights", args.weights), ("--init-from", args.init_from), ("--resume", args.resume),
                       ("--evaluate", args.evaluate)):
        if path is not None and not Path(path).is_file():
            _fail(f"{flag} {path}: no such file")
    for path in args.gradcam or []:
        if not Path(path).is_file():
            _fail(f"--gradcam {path}: no such file")
    if not args.synthetic and not args.data_root.is_dir():
        _fail(f"--data-root {args.data_root}: no such folder")


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
        _fail(f"--resume {path}: the checkpoint was trained with other settings ({details})")


def _build_model(args: argparse.Namespace, num_labels: int) -> torch.nn.Module:
    from chexpert_example.model import CheXpertDenseNet

    try:
        return CheXpertDenseNet(num_labels, dropout=args.dropout, init=args.init, batchnorm=args.batchnorm,
                                pretrained=args.pretrained, weights=args.weights)
    except (TypeError, ValueError) as error:
        _fail(str(error))
    except OSError as error:  # --pretrained without a network (URLError is an OSError)
        if not args.pretrained:
            raise
        _fail(f"--pretrained could not fetch torchvision's ImageNet weights ({error}); without a network, give a "
              "local DenseNet121 state dict with --weights PATH")


def _eval_loader(dataset: Any, batch_size: int, processes: Processes, loader_args: dict[str, Any]) -> DataLoader:
    """Every image once, in order, each process its shard (``ShardSampler``), with indices to gather them."""
    sampler = ShardSampler(len(dataset), processes.rank, processes.world_size)
    return DataLoader(Indexed(dataset), batch_size, sampler=sampler, **loader_args)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    began = time.perf_counter()
    args = parse_args(argv)
    _check_files(args)
    # torchvision is imported here, after argument checks, so that --help works without it.
    from chexpert_example.calibration import calibration_report
    from chexpert_example.data import CheXpertDataset, build_transform
    from chexpert_example.evaluation import evaluate, score
    from chexpert_example.gradcam import write_gradcam_pngs
    from chexpert_example.inference import mc_dropout, write_mc_dropout_csv
    from chexpert_example.plots import plot_reliability
    from chexpert_example.predictions import write_predictions_csv
    from chexpert_example.train_loop import BEST, TrainConfig, fit, load_checkpoint

    processes, device = init_from_environment(args.device)
    try:
        if args.batch_size % processes.world_size:
            _fail(f"--batch-size {args.batch_size} is not divisible by the {processes.world_size} processes")
        random.seed(args.seed)
        np.random.seed(args.seed)  # noqa: NPY002 - seeds any code that still draws from the global NumPy RNG
        torch.manual_seed(args.seed)
        if processes.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
            if args.synthetic:
                from chexpert_example.synthetic import write_synthetic_chexpert

                write_synthetic_chexpert(args.data_root, n_train=SYNTHETIC_STUDIES[0], n_valid=SYNTHETIC_STUDIES[1],
                                         n_test=SYNTHETIC_STUDIES[2], seed=args.seed)
        barrier(processes)
        workers = args.workers if args.workers is not None else (
            min(8, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else 0)

        hierarchy = chexpert_hierarchy(uncertain_label=args.uncertain_label)
        try:
            files = default_data_files(args.data_root, args.layout, args.train_labels, args.train_csv,
                                       args.valid_csv, args.test_csv)
            transform = {"image_size": args.image_size, "augment": args.augment, "normalize": args.normalize,
                         "antialias": args.antialias, "clahe": args.clahe}
            eval_transform = build_transform(train=False, **transform)
            # label smoothing (ones-lsr / zeros-lsr) softens the training targets only; evaluation reads hard ones
            dataset_args = {"root": args.data_root, "view": args.view, "policy": hard_policy(args.uncertainty_policy),
                            "with_uncertain": args.uncertain_label}
            train_set = CheXpertDataset(files.train, transform=build_transform(train=True, **transform),
                                        **{**dataset_args, "policy": args.uncertainty_policy}, seed=args.seed)
            valid_set = CheXpertDataset(files.valid, transform=eval_transform, **dataset_args)
            steering_set = valid_set  # the validation images that steer training: augmented, as the reference
            if args.augment_valid:
                steering_set = copy.copy(valid_set)
                steering_set.transform = build_transform(train=True, **transform)
            test_set = CheXpertDataset(files.test, transform=eval_transform, **{
                **dataset_args, "view": args.test_view or args.view}) if files.test is not None else None
        except (FileNotFoundError, ValueError) as error:
            _fail(str(error))
        for name, dataset, path in (("validation", valid_set, files.valid), ("test", test_set, files.test)):
            if dataset is not None and bool(torch.isnan(dataset.targets).any()):
                _fail(f"{path}: the {name} labels hold uncertain (-1) values, which --uncertainty-policy ignore "
                      "leaves unknown; evaluation needs 0/1 targets (give radiologist labels, or zeros / ones)")
        if processes.is_main:
            notes = {dataset.layout_note for dataset in (train_set, valid_set, test_set)
                     if dataset is not None and dataset.layout_note}
            for note in sorted(notes):
                print(f"layout: {note}", flush=True)
            print(f"{len(train_set)} training, {len(valid_set)} validation"
                  + (f", {len(test_set)} test" if test_set is not None else "") + " images; "
                  f"{hierarchy.num_labels} outputs; {processes.world_size} process(es) on {device}", flush=True)

        weight_targets = train_set.target_frame  # edge weights are counted on hard targets
        if args.uncertainty_policy != hard_policy(args.uncertainty_policy):
            weight_targets = derive_targets(train_set.frame, hard_policy(args.uncertainty_policy),
                                            args.uncertain_label)
        penalties = fit_penalties(weight_targets, hierarchy, args.penalty, args.beta)
        criterion = build_criterion(args.loss, hierarchy, penalties, args.scale, args.edge_reduction,
                                    args.add_penalty)
        postprocess = prediction_transform(args.loss, hierarchy)
        model = _build_model(args, hierarchy.num_labels)
        if args.init_from is not None:  # e.g. the fine-tuning stage of conditional training (--resume still wins)
            initial = load_checkpoint(args.init_from)
            if tuple(initial["labels"]) != hierarchy.labels:
                _fail(f"--init-from {args.init_from}: the checkpoint's labels {list(initial['labels'])} differ from "
                      f"this run's {list(hierarchy.labels)}")
            model.load_state_dict(initial["model"])
        torch.manual_seed(args.seed + processes.rank)  # same initial model everywhere, own augmentation per rank

        per_process_batch = args.batch_size // processes.world_size
        loader_args: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda",
                                       "persistent_workers": workers > 0}
        # A last batch of one image breaks BatchNorm in training mode: drop it then (and only then, as Keras keeps
        # partial batches). DistributedSampler gives every process ceil(N / processes) images.
        drop_last = math.ceil(len(train_set) / processes.world_size) % per_process_batch == 1
        if processes.distributed:
            train_sampler = DistributedSampler(train_set, processes.world_size, processes.rank, shuffle=True,
                                               seed=args.seed)
            train_loader = DataLoader(train_set, per_process_batch, sampler=train_sampler, drop_last=drop_last,
                                      **loader_args)
        else:
            train_loader = DataLoader(train_set, per_process_batch, shuffle=True, drop_last=drop_last,
                                      generator=torch.Generator().manual_seed(args.seed), **loader_args)
        steering_loader = _eval_loader(steering_set, per_process_batch, processes, loader_args)
        valid_loader = _eval_loader(valid_set, per_process_batch, processes, loader_args)
        test_loader = _eval_loader(test_set, per_process_batch, processes, loader_args) if test_set else None

        config = {key: _json_ready(value) for key, value in vars(args).items()}
        train_config = TrainConfig(epochs=args.epochs, lr=args.lr, adam_eps=args.adam_eps, lr_factor=args.lr_factor,
                                   lr_patience=args.lr_patience, lr_min_delta=args.lr_min_delta, min_lr=args.min_lr,
                                   early_stopping=args.early_stopping, monitor=args.monitor,
                                   auroc_average=args.auroc_average, amp=args.amp,
                                   progress=args.progress, max_batches=args.max_batches)
        if args.evaluate is not None:
            evaluated = args.evaluate
            checkpoint = load_checkpoint(evaluated, device)
            if tuple(checkpoint["labels"]) != hierarchy.labels:
                _fail(f"--evaluate {evaluated}: the checkpoint's labels {list(checkpoint['labels'])} differ from "
                      f"this run's {list(hierarchy.labels)}")
            model.load_state_dict(checkpoint["model"])
            result: dict[str, Any] = {"history": checkpoint.get("history", []), "best_epoch": checkpoint["epoch"],
                                      "best_epochs": None, "stopped_early": None}
        else:
            if args.resume is not None:
                _check_resume_config(load_checkpoint(args.resume), config, args.resume)
            metadata = {"config": config, "penalties": penalties.to_dict()}
            result = fit(model, criterion, train_loader, steering_loader, hierarchy, train_config, args.out, device,
                         processes, resume=args.resume, metadata=metadata, postprocess=postprocess)
            evaluated = args.out / BEST[args.monitor]
            barrier(processes)
            if evaluated.exists():  # restore the best weights, as the reference's EarlyStopping
                model.load_state_dict(load_checkpoint(evaluated, device)["model"])
        model.to(device).eval()
        criterion.to(device)
        if postprocess is not None:
            postprocess.to(device)

        splits = {"valid": (valid_set, valid_loader), **({"test": (test_set, test_loader)} if test_set else {})}
        scores, evaluations = {}, {}
        for split, (_, loader) in splits.items():
            evaluations[split] = evaluate(model, loader, hierarchy, device, criterion, postprocess, args.amp,
                                          args.max_batches, args.progress and processes.is_main, desc=split)
            scores[split] = evaluations[split].scores.as_dict()
        reported = "test" if "test" in scores else "valid"
        inference_set, inference_loader = splits[reported]
        evaluation = evaluations[reported]
        relative = inference_set.relative_images()
        images = [relative[i] for i in evaluation.index.tolist()]

        mc = None
        if args.mc_dropout > 0:
            mc = mc_dropout(model, inference_loader, args.mc_dropout, device, args.mc_dropout_batchnorm,
                            args.progress and processes.is_main, args.max_batches, postprocess)

        outputs: dict[str, Any] = {}
        if processes.is_main:
            labels = list(hierarchy.labels)
            same_rows = mc is not None and torch.equal(mc.index, evaluation.index)
            write_predictions_csv(args.out / "predictions.csv", images, labels, evaluation.probs.numpy(),
                                  evaluation.targets.numpy(), mc.std.numpy() if mc is not None and same_rows else None)
            bins = args.calibration_bins
            calibration = {"predictions": calibration_report(evaluation.probs.numpy(), evaluation.targets.numpy(),
                                                             labels, bins)}
            plot_reliability(calibration["predictions"], args.out / "reliability.png",
                             f"{reported}: predictions (model in eval mode)")
            mc_summary = None
            if mc is not None:
                write_mc_dropout_csv(args.out / "mc_dropout.csv", [relative[i] for i in mc.index.tolist()], labels,
                                     mc.mean, mc.std)
                calibration["mc_dropout"] = calibration_report(mc.mean.numpy(), mc.targets.numpy(), labels, bins)
                plot_reliability(calibration["mc_dropout"], args.out / "reliability_mc_dropout.png",
                                 f"{reported}: mean of {args.mc_dropout} MC dropout passes")
                mc_scores = score(mc.mean, mc.targets, hierarchy).as_dict()
                mc_summary = {"passes": args.mc_dropout, "batchnorm": args.mc_dropout_batchnorm, "split": reported,
                              "csv": str(args.out / "mc_dropout.csv"),
                              "weighted_auroc": mc_scores["weighted_auroc"],
                              "violation_rate": mc_scores["violation_rate"], "mean_std": float(mc.std.mean()),
                              "mean_ece": calibration["mc_dropout"]["mean_ece"]}
            (args.out / "calibration.json").write_text(json.dumps(_json_ready(calibration), indent=1))
            outputs["mc_dropout"] = mc_summary
            outputs["calibration"] = {key: {"mean_ece": value["mean_ece"],
                                            "ece": {k: v["ece"] for k, v in value["labels"].items()}}
                                      for key, value in calibration.items()}

            gradcam_index = []
            if args.gradcam is not None:
                from PIL import Image

                if args.gradcam:
                    jobs = [(Image.open(path).convert("L"), path.stem, str(path)) for path in args.gradcam]
                else:
                    jobs = [(inference_set.load_image(i), Path(name).with_suffix("").as_posix(), name)
                            for i, name in enumerate(relative[:args.gradcam_count])]
                for gray, name, source in jobs:
                    for label, prob, png in write_gradcam_pngs(model, eval_transform(gray), gray, labels,
                                                               args.out / "gradcam", name, args.gradcam_target,
                                                               args.gradcam_clip):
                        gradcam_index.append({"image": source, "label": label, "probability": prob,
                                              "png": str(png)})
                (args.out / "gradcam").mkdir(exist_ok=True)
                (args.out / "gradcam" / "index.json").write_text(json.dumps(gradcam_index, indent=1))
            outputs["gradcam"] = len(gradcam_index)

        metrics = None
        if processes.is_main:
            import torchvision

            metrics = {
                "split": reported,
                **{key: scores[reported][key] for key in ("weighted_auroc", "macro_auroc", "per_label_auroc",
                                                         "violation_rate", "violation_rate_any_threshold", "loss")},
                "images": len(images),
                "valid": scores["valid"],
                "test": scores.get("test"),
                "checkpoint": str(evaluated),
                "best_epoch": result["best_epoch"],
                "best_epochs": result.get("best_epochs"),
                "stopped_early": result["stopped_early"],
                "history": result["history"],
                **outputs,
                "penalties": {f"{parent} -> {child}": value
                              for (parent, child), value in penalties.as_mapping().items()},
                "config": {**config, "labels": list(hierarchy.labels), "device": str(device), "workers": workers,
                           "world_size": processes.world_size, "layout": files.layout,
                           "csvs": {"train": str(files.train), "valid": str(files.valid),
                                    "test": None if files.test is None else str(files.test)}},
                "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                                "hierloss": hierloss.__version__, "python": platform.python_version(),
                                "machine": platform.machine(), "cuda": torch.cuda.get_device_name(device)
                                if device.type == "cuda" else None},
                "seconds": time.perf_counter() - began,
            }
            metrics = _json_ready(metrics)
            (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
            print(f"{reported} weighted AUROC {metrics['weighted_auroc']}, violation rate "
                  f"{metrics['violation_rate']}; wrote {args.out / 'metrics.json'} ({metrics['seconds']:.1f} s)",
                  flush=True)
        barrier(processes)
        return metrics
    finally:
        shutdown(processes)


if __name__ == "__main__":
    main()
