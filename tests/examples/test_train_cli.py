"""End-to-end tests of examples/chexpert/train.py and benchmark_throughput.py on the synthetic CheXpert."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.examples

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chexpert"
LABELS_21 = 21
# What train.py does without tuning flags: the reference run (the-mercury/CIHMLC at 08c0102).
REFERENCE_DEFAULTS = {"view": "all", "monitor": "loss", "auroc_average": "macro", "lr": 1e-4, "adam_eps": 1e-7,
                      "lr_factor": 0.9, "lr_patience": 1, "min_lr": 1e-8, "early_stopping": 10, "batch_size": 16,
                      "amp": False, "augment": "reference", "augment_valid": True, "normalize": "unit",
                      "antialias": False, "init": "keras", "batchnorm": "keras", "dropout": 0.5,
                      "loss": "hbce-hard", "penalty": "data", "uncertainty_policy": "zeros", "uncertain_label": True,
                      "train_labels": "visualchexbert", "mc_dropout": 10, "mc_dropout_batchnorm": "inference",
                      "gradcam_target": "probability", "seed": 2408, "pretrained": False, "weights": None}


def train(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE / "train.py"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def script(name: str) -> ModuleType:
    """examples/chexpert/<name>.py as a module, to call its main() in this process (no start-up cost)."""
    spec = importlib.util.spec_from_file_location(f"chexpert_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_module() -> ModuleType:
    return script("train")


def parameters(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The trainable parameters of a checkpoint's model (not the BatchNorm running statistics)."""
    from chexpert_example.model import CheXpertDenseNet

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    names = {name for name, _ in CheXpertDenseNet(len(state["classifier.3.bias"]), init="torch").named_parameters()}
    return {name: value for name, value in state.items() if name in names}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's command: ``train.py --synthetic --epochs 1 --image-size 64 --out DIR`` (every other setting is
    the reference's). Its run time is recorded in examples/chexpert/results/, not asserted here."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    result = train("--synthetic", "--epochs", "1", "--image-size", "64", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_synthetic_run_uses_the_reference_settings_and_writes_every_output(smoke_run: Path) -> None:
    """metrics.json (test scores of best_loss.pt, history, the reference's settings), three checkpoints,
    predictions.csv in the reference's format, MC dropout, calibration, and 21 Grad-CAM PNGs."""
    out = smoke_run
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert {key: config[key] for key in REFERENCE_DEFAULTS} == REFERENCE_DEFAULTS
    assert config["layout"] == "CheXpert-v1.0" and config["world_size"] == 1
    assert config["csvs"]["train"].endswith("CheXpert-v1.0/train_visualCheXbert.csv")
    assert metrics["split"] == "test" and metrics["checkpoint"] == str(out / "best_loss.pt")
    assert 0.0 <= metrics["weighted_auroc"] <= 1.0 and 0.0 <= metrics["violation_rate"] <= 1.0
    assert set(metrics["per_label_auroc"]) == set(config["labels"]) and len(config["labels"]) == LABELS_21
    assert [row["epoch"] for row in metrics["history"]] == [1] and metrics["best_epochs"] == {"loss": 1, "auroc": 1}
    assert metrics["test"]["weighted_auroc"] == metrics["weighted_auroc"]
    assert len(metrics["penalties"]) == 20
    for name in ("last.pt", "best_loss.pt", "best_auroc.pt"):
        checkpoint = torch.load(out / name, map_location="cpu", weights_only=False)
        assert checkpoint["epoch"] == 1 and len(checkpoint["labels"]) == LABELS_21
    predictions = pd.read_csv(out / "predictions.csv")
    studies = pd.read_csv(out / "synthetic_data" / "CheXpert-v1.0" / "test_labels.csv")
    test_images = sorted(str(p.relative_to(out / "synthetic_data"))
                         for p in (out / "synthetic_data" / "CheXpert-v1.0" / "test").glob("*/*/*.jpg"))
    assert sorted(predictions["Path"]) == test_images and len(test_images) > len(studies)  # every view
    assert metrics["images"] == len(test_images)
    assert {f"Edema{suffix}" for suffix in ("_GT", "_Pred", "_Std")} <= set(predictions.columns)
    assert metrics["mc_dropout"]["passes"] == 10 and metrics["mc_dropout"]["batchnorm"] == "inference"
    mc = pd.read_csv(out / "mc_dropout.csv")
    assert len(mc) == len(test_images) * LABELS_21 and (mc["std"] > 0).any()
    calibration = json.loads((out / "calibration.json").read_text())
    assert set(calibration) == {"predictions", "mc_dropout"}
    assert set(calibration["mc_dropout"]["labels"]) == set(config["labels"])
    assert metrics["calibration"]["mc_dropout"]["mean_ece"] == calibration["mc_dropout"]["mean_ece"]
    assert (out / "reliability.png").is_file() and (out / "reliability_mc_dropout.png").is_file()
    pngs = sorted((out / "gradcam").glob("*/*.png"))
    assert len(pngs) == LABELS_21 == metrics["gradcam"]
    index = json.loads((out / "gradcam" / "index.json").read_text())
    assert {Path(row["png"]) for row in index} == set(pngs)


def test_score_py_reproduces_the_runs_test_auroc(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """score.py on the run's predictions.csv and the test labels gives the AUROCs of metrics.json."""
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    report = script("score").main([str(smoke_run / "predictions.csv"), "--labels",
                                   str(smoke_run / "synthetic_data" / "CheXpert-v1.0" / "test_labels.csv")])
    assert capsys.readouterr().out.startswith(f"weighted AUROC {metrics['weighted_auroc']:.4f}  "
                                              f"({metrics['images']} images")
    assert report["weighted_auroc"] == pytest.approx(metrics["weighted_auroc"], abs=1e-12)
    assert report["per_label_auroc"] == pytest.approx(metrics["per_label_auroc"], abs=1e-12)


def test_resume_trains_on_from_the_last_checkpoint(smoke_run: Path, tmp_path: Path) -> None:
    """``--resume`` trains epoch 2 only, keeping epoch 1's history, and the optimiser moves every parameter
    tensor; changed settings are refused in one line."""
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    first = json.loads((out / "metrics.json").read_text())["history"]
    before = parameters(out / "last.pt")
    train_module().main(["--synthetic", "--epochs", "2", "--image-size", "64", "--out", str(out), "--resume",
                         "--max-batches", "2", "--no-progress", "--gradcam-count", "0", "--mc-dropout", "0"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["history"][0] == first[0]
    after = parameters(out / "last.pt")
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=False)["epoch"] == 2
    unchanged = [name for name, value in after.items() if torch.equal(value, before[name])]
    assert not unchanged, f"{len(unchanged)} of {len(after)} parameter tensors did not move, e.g. {unchanged[:3]}"
    refused = run_main(["--synthetic", "--epochs", "3", "--image-size", "64", "--out", str(out), "--resume",
                        "--loss", "bce"])
    assert refused == (f"train.py: error: --resume {out / 'last.pt'}: the checkpoint was trained with other "
                       "settings (loss: 'hbce-hard' → 'bce')")


def test_small_layout_twenty_outputs_ignore_policy_and_the_non_reference_options(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On CheXpert-v1.0-small (test labels naming CheXpert-v1.0/ studies): 20 outputs, the 'ignore' policy on the
    labeler CSV, mcloss, affine augmentation, ImageNet normalisation, AUROC monitoring, MC dropout with batch
    statistics and Grad-CAM of the logit all run."""
    from chexpert_example.synthetic import write_synthetic_chexpert

    root = tmp_path / "data"
    splits = write_synthetic_chexpert(root, n_train=16, n_valid=8, n_test=6, folder="CheXpert-v1.0-small")
    out = tmp_path / "run"
    train_module().main(["--data-root", str(root), "--test-csv", str(splits.test_csv), "--epochs", "1",
                         "--image-size", "32", "--out", str(out), "--no-uncertain-label", "--uncertainty-policy",
                         "ignore", "--train-labels", "labeler", "--loss", "mcloss", "--max-batches", "1",
                         "--mc-dropout", "3", "--mc-dropout-batchnorm", "training", "--augment", "affine",
                         "--normalize", "imagenet", "--monitor", "auroc", "--init", "torch", "--batchnorm", "torch",
                         "--gradcam", "--gradcam-count", "1", "--gradcam-target", "logit", "--no-progress"])
    assert f"layout: CheXpert-v1.0/ entries read from {root}/CheXpert-v1.0-small/" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["layout"] == "CheXpert-v1.0-small"
    assert metrics["config"]["csvs"]["train"] == str(root / "CheXpert-v1.0-small" / "train.csv")
    assert len(metrics["per_label_auroc"]) == 20 and "Uncertain" not in metrics["per_label_auroc"]
    assert metrics["checkpoint"] == str(out / "best_auroc.pt")
    assert metrics["mc_dropout"]["batchnorm"] == "training" and metrics["mc_dropout"]["passes"] == 3
    frame = pd.read_csv(out / "mc_dropout.csv")
    assert list(frame.columns) == ["image", "label", "mean", "std"]
    assert frame["image"].str.startswith("CheXpert-v1.0-small/test/").all()
    assert frame["mean"].between(0, 1).all() and (frame["std"] >= 0).all()
    assert len(list((out / "gradcam").glob("*/*.png"))) == 20


def test_conditional_training_with_label_smoothing(tmp_path: Path) -> None:
    """--loss conditional with --uncertainty-policy ones-lsr trains on the labeler CSV (soft training targets), its
    predictions are the chain rule's marginals (no violation at any threshold), and the edge weights are fitted on
    the hard targets."""
    from chexpert_example.synthetic import write_synthetic_chexpert

    root = tmp_path / "data"
    splits = write_synthetic_chexpert(root, n_train=16, n_valid=8, n_test=6)
    out = tmp_path / "run"
    train_module().main(["--data-root", str(root), "--test-csv", str(splits.test_csv), "--epochs", "1",
                         "--image-size", "32", "--out", str(out), "--train-labels", "labeler",
                         "--uncertainty-policy", "ones-lsr", "--loss", "conditional", "--max-batches", "1",
                         "--mc-dropout", "0", "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["loss"] == "conditional" and metrics["config"]["uncertainty_policy"] == "ones-lsr"
    assert metrics["violation_rate_any_threshold"] == 0.0 and metrics["valid"]["violation_rate_any_threshold"] == 0.0
    predictions = pd.read_csv(out / "predictions.csv")
    assert (predictions["Cardiomegaly_Pred"] <= predictions["Cardiac_Pred"] + 1e-6).all()


def test_fine_tuning_stage_starts_from_the_conditional_run(tmp_path: Path) -> None:
    """Chen et al.'s two stages: a --loss conditional run, then --loss chain-rule-bce --init-from its checkpoint.
    With 0 epochs the second run predicts exactly what the first did (its weights were loaded); with one epoch it
    trains every parameter tensor away from them, through the chain rule (no violation). A checkpoint of other
    labels is refused naming both lists, and --init-from with --evaluate is a usage error."""
    from chexpert_example.synthetic import write_synthetic_chexpert

    root = tmp_path / "data"
    splits = write_synthetic_chexpert(root, n_train=16, n_valid=8, n_test=6)
    common = ["--data-root", str(root), "--test-csv", str(splits.test_csv), "--image-size", "32",
              "--max-batches", "1", "--mc-dropout", "0", "--gradcam-count", "0", "--no-progress"]
    first = tmp_path / "conditional"
    train_module().main([*common, "--epochs", "1", "--loss", "conditional", "--out", str(first)])
    checkpoint = first / "best_loss.pt"
    same = tmp_path / "same"
    train_module().main([*common, "--epochs", "0", "--loss", "chain-rule-bce", "--init-from", str(checkpoint),
                         "--out", str(same)])
    pd.testing.assert_frame_equal(pd.read_csv(same / "predictions.csv"), pd.read_csv(first / "predictions.csv"))
    tuned = tmp_path / "tuned"
    train_module().main([*common, "--epochs", "1", "--loss", "chain-rule-bce", "--init-from", str(checkpoint),
                         "--out", str(tuned)])
    metrics = json.loads((tuned / "metrics.json").read_text())
    assert metrics["config"]["loss"] == "chain-rule-bce" and metrics["config"]["init_from"] == str(checkpoint)
    assert metrics["violation_rate_any_threshold"] == 0.0
    before, after = parameters(checkpoint), parameters(tuned / "last.pt")
    unchanged = [name for name, value in after.items() if torch.equal(value, before[name])]
    assert not unchanged, f"{len(unchanged)} of {len(after)} parameter tensors did not move, e.g. {unchanged[:3]}"
    message = run_main([*common, "--epochs", "1", "--no-uncertain-label", "--init-from", str(checkpoint), "--out",
                        str(tmp_path / "other")])
    assert message.startswith(f"train.py: error: --init-from {checkpoint}: the checkpoint's labels [")
    assert "'Uncertain'" in message.split("differ from this run's")[0]  # 21 labels saved, 20 asked for
    assert "'Uncertain'" not in message.split("differ from this run's")[1] and "\n" not in message
    with pytest.raises(SystemExit) as stopped:
        train_module().parse_args(["--synthetic", "--out", "x", "--evaluate", "a.pt", "--init-from", "b.pt"])
    assert stopped.value.code == 2


def run_main(argv: list[str]) -> str:
    """train.main(argv) in this process, expected to stop with an error: returns the message."""
    with pytest.raises(SystemExit) as stopped:
        train_module().main(argv)
    return str(stopped.value.code)


def test_missing_files_stop_with_one_line_naming_them(tmp_path: Path) -> None:
    """A missing data root, layout folder, label CSV, --weights, --evaluate or --gradcam file is named in one line."""
    from chexpert_example.synthetic import write_synthetic_chexpert

    out = str(tmp_path / "out")
    assert run_main(["--data-root", str(tmp_path / "none"), "--out", out]) == (
        f"train.py: error: --data-root {tmp_path / 'none'}: no such folder")
    (tmp_path / "empty").mkdir()
    message = run_main(["--data-root", str(tmp_path / "empty"), "--out", out])
    assert message == (f"train.py: error: {tmp_path / 'empty'} holds neither CheXpert-v1.0/ nor CheXpert-v1.0-small/ "
                       "(give --data-root the folder that contains one)")
    splits = write_synthetic_chexpert(tmp_path / "data", n_train=2, n_valid=2, n_test=2, image_height=16)
    splits.train_csv.unlink()
    message = run_main(["--data-root", str(splits.root), "--out", out])
    assert message.startswith(f"train.py: error: training labels not found: {splits.train_csv} (the VisualCheXbert")
    assert "\n" not in message
    for flag in ("--weights", "--init-from", "--evaluate"):
        assert run_main(["--synthetic", "--out", out, flag, str(tmp_path / "w.pt")]) == (
            f"train.py: error: {flag} {tmp_path / 'w.pt'}: no such file")
    assert run_main(["--synthetic", "--out", out, "--gradcam", str(tmp_path / "x.png")]) == (
        f"train.py: error: --gradcam {tmp_path / 'x.png'}: no such file")


def test_pretrained_without_a_network_suggests_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """When torchvision cannot fetch the ImageNet weights, the error says to give a local file with --weights."""
    import urllib.error

    from chexpert_example import model

    def offline(**kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(model, "densenet121", offline)
    module = train_module()
    args = module.parse_args(["--synthetic", "--out", "x", "--pretrained"])
    with pytest.raises(SystemExit, match=r"--pretrained could not fetch torchvision's ImageNet weights .*no "
                       r"network.*; without a network, give a local DenseNet121 state dict with --weights PATH"):
        module._build_model(args, 21)


def test_cli_rejects_bad_combinations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No data, --add-penalty on an HBCE loss, a too small image, --pretrained with --weights, --evaluate with
    --resume and a zero patience fail with a usage error."""
    cases = [
        (["--out", str(tmp_path)], "give --data-root"),
        (["--synthetic", "--out", str(tmp_path), "--loss", "hbce", "--add-penalty", "hinge"],
         "--add-penalty is for the non-BCE losses"),
        (["--synthetic", "--out", str(tmp_path), "--image-size", "16"], "--image-size must be >= 32"),
        (["--synthetic", "--out", str(tmp_path), "--pretrained", "--weights", "w.pth"],
         "argument --weights: not allowed with argument --pretrained"),
        (["--synthetic", "--out", str(tmp_path), "--evaluate", "a.pt", "--resume"], "--evaluate scores a checkpoint"),
        (["--synthetic", "--out", str(tmp_path), "--lr-patience", "0"], "--lr-patience must be >= 1, got 0"),
    ]
    module = train_module()
    for args, message in cases:
        with pytest.raises(SystemExit) as stopped:
            module.parse_args(args)
        assert stopped.value.code == 2, args
        assert message in capsys.readouterr().err, args


def test_benchmark_throughput_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The throughput script times training steps and the data pipeline and writes positive images/s."""
    script("benchmark_throughput").main(["--image-size", "32", "--batch-sizes", "2", "--warmup", "1", "--steps", "1",
                                         "--loader-workers", "0", "--loader-images", "4", "--json",
                                         str(tmp_path / "t.json")])
    report = json.loads((tmp_path / "t.json").read_text())
    assert [row["what"] for row in report["rows"]] == ["train step", "data pipeline, 0 workers"]
    assert all(row["images_per_second"] > 0 for row in report["rows"])
    assert "| train step | 32 | 2 | off |" in capsys.readouterr().out
