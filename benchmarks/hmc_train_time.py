"""Training time of the HMC harness for BCE, MCLoss and conditional training with fine-tuning, timed alternately.

Each run is ``hmc_quality.py`` in a fresh process on one dataset, seed and number of epochs, one thread; the recipes
take turns, round after round, so that a slow spell of the machine falls on all of them. Every row that
``hmc_quality.py`` writes (its AU(PRC) and ``train_s``, the training loop's own time) is kept with its round; the
summary gives each recipe's median ``train_s``, its ratio to BCE's and its AU(PRC), which a change of speed must
not change.

Run: ``python benchmarks/hmc_train_time.py [--dataset derisi_GO] [--epochs 3] [--rounds 6] --out rows.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECIPES = ("bce", "mcloss", "conditional-ft")
# the output each recipe is scored on (its head): BCE's raw scores, MCLoss's max-constraint, the chain rule's marginals
SCORED = {"bce": "raw", "mcloss": "max-constraint", "conditional-ft": "chain-rule"}


def run_once(dataset: str, recipe: str, epochs: int, seed: int, data: Path | None) -> list[dict[str, Any]]:
    """The rows of one ``hmc_quality.py`` run in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.jsonl"
        cmd = [sys.executable, str(HERE / "hmc_quality.py"), "--datasets", dataset, "--seeds", str(seed), "--losses",
               recipe, "--epochs", str(epochs), "--threads", "1", "--out", str(out)]
        if data is not None:
            cmd += ["--data", str(data)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe: median ``train_s`` over the rounds, its ratio to BCE's, and the scored output's AU(PRC) values."""
    medians, scores = {}, {}
    for recipe in RECIPES:
        scored = [r for r in rows if r["loss"] == recipe and r["output"] == SCORED[recipe]]
        if scored:
            medians[recipe] = statistics.median(r["train_s"] for r in scored)
            scores[recipe] = sorted({r["auprc"] for r in scored})
    return [{"recipe": k, "median_train_s": v, "ratio_to_bce": v / medians["bce"] if "bce" in medians else None,
             "auprc": scores[k]} for k, v in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="derisi_GO")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="HMC data folder (default: hmc_quality.py's)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines: every run's rows, with their round")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for round_ in range(1, args.rounds + 1):
        for recipe in RECIPES:
            for row in run_once(args.dataset, recipe, args.epochs, args.seed, args.data):
                rows.append({**row, "round": round_})
            print(f"round {round_} {recipe}: {rows[-1]['train_s']:.1f} s", file=sys.stderr)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("| recipe | median train s | × BCE | AU(PRC) |\n|---|---|---|---|")
    for s in summary(rows):
        print(f"| {s['recipe']} | {s['median_train_s']:.1f} | {s['ratio_to_bce']:.2f} | "
              f"{', '.join(f'{a:.4f}' for a in s['auprc'])} |")


if __name__ == "__main__":
    main()
