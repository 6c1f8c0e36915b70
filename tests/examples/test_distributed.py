"""Data-parallel training of examples/chexpert/train.py: torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = [pytest.mark.examples, pytest.mark.distributed]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chexpert"
COMMON = ["--epochs", "1", "--image-size", "32", "--mc-dropout", "2", "--gradcam-count", "0", "--no-progress",
          "--no-augment-valid"]


def torchrun(*args: str, processes: int) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node PROCESSES train.py ARGS`` (one thread per process)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    return subprocess.run([*launcher, str(EXAMPLE / "train.py"), *args], capture_output=True, text=True,
                          timeout=900, check=False, env=env)


def test_two_process_run_evaluates_as_one_process_does_its_checkpoint(tmp_path: Path) -> None:
    """torchrun --nproc_per_node 2 trains with DDP, rank 0 writes the checkpoints, every rank validates rank 0's
    model, and the distributed evaluation (each rank its shard, metrics synchronised) equals a one-process
    evaluation of best_loss.pt."""
    ddp = tmp_path / "ddp"
    result = torchrun("--synthetic", "--out", str(ddp), *COMMON, processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["config"]["world_size"] == 2 and metrics["checkpoint"] == str(ddp / "best_loss.pt")
    assert sorted(p.name for p in ddp.glob("*.pt")) == ["best_auroc.pt", "best_loss.pt", "last.pt"]
    # validation during training saw rank 0's BatchNorm statistics on every rank: the model best_loss.pt holds
    assert metrics["history"][0]["valid_loss"] == pytest.approx(metrics["valid"]["loss"], rel=1e-6)
    data = ddp / "synthetic_data"
    test_csv = data / "CheXpert-v1.0" / "test_labels.csv"
    single = tmp_path / "single"
    spec = importlib.util.spec_from_file_location("chexpert_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    alone = train.main(["--data-root", str(data), "--test-csv", str(test_csv), "--evaluate", str(ddp / "best_loss.pt"),
                        "--out", str(single), *COMMON])
    assert alone == json.loads((single / "metrics.json").read_text())
    assert alone["config"]["world_size"] == 1 and alone["images"] == metrics["images"] >= 4
    for split in ("test", "valid"):
        for key in ("weighted_auroc", "macro_auroc", "violation_rate", "violation_rate_any_threshold", "loss"):
            assert metrics[split][key] == pytest.approx(alone[split][key], rel=1e-5, abs=1e-6), (split, key)
        for label, value in alone[split]["per_label_auroc"].items():
            assert metrics[split]["per_label_auroc"][label] == pytest.approx(value, abs=1e-6), (split, label)
    shared, own = pd.read_csv(ddp / "predictions.csv"), pd.read_csv(single / "predictions.csv")
    assert list(shared["Path"]) == list(own["Path"])  # dataset order, every image once
    columns = [c for c in own.columns if c.endswith("_Pred") or c.endswith("_GT")]
    np.testing.assert_allclose(shared[columns].to_numpy(), own[columns].to_numpy(), atol=1e-5)
    mc = pd.read_csv(ddp / "mc_dropout.csv")
    assert sorted(set(mc["image"])) == sorted(own["Path"])  # both ranks' Monte Carlo rows gathered
    weights = torch.load(ddp / "best_loss.pt", map_location="cpu", weights_only=False)
    assert weights["config"]["batch_size"] == 16 and weights["epoch"] == 1
