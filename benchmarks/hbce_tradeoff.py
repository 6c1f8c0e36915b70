"""Choose HBCELoss's defaults from evidence: AU(PRC) and violation rates against the penalty form and λ.

Protocol (the issue's): MLP F→500→500→C with ReLU and dropout 0.7, Adam lr 1e-4, batch 16, 30 epochs, trained on
the train split, evaluated on the test split; one seed per configuration. Each trained model is also evaluated
after max-projection (each label's score = max over itself and its descendants). Appends JSON lines to --out and
prints a markdown table. Run: ``python benchmarks/hbce_tradeoff.py --datasets eisen_FUN derisi_FUN``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from hierloss import HBCELoss, Hierarchy
from hierloss.datasets import load_hmc
from hierloss.propagation import max_over_descendants

HMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmc"

CONFIGS: dict[str, dict[str, Any]] = {
    "bce": {"scale": 0.0, "mode": "hinge"},
    "hard λ=1 (reference)": {"scale": 1.0, "mode": "hard"},
    "hinge sum λ=1": {"scale": 1.0, "mode": "hinge", "edge_reduction": "sum"},
    "hinge mean λ=0.3": {"scale": 0.3, "mode": "hinge"},
    "hinge mean λ=1": {"scale": 1.0, "mode": "hinge"},
    "hinge mean λ=3": {"scale": 3.0, "mode": "hinge"},
    "hinge mean λ=10": {"scale": 10.0, "mode": "hinge"},
    "squared_hinge mean λ=1": {"scale": 1.0, "mode": "squared_hinge"},
    "squared_hinge mean λ=10": {"scale": 10.0, "mode": "squared_hinge"},
    "soft τ=0.1 mean λ=1": {"scale": 1.0, "mode": "soft", "temperature": 0.1},
    "soft τ=0.1 mean λ=10": {"scale": 10.0, "mode": "soft", "temperature": 0.1},
    "soft τ=0.5 mean λ=10": {"scale": 10.0, "mode": "soft", "temperature": 0.5},
}


def violation_rates(probs: torch.Tensor, h: Hierarchy) -> tuple[float, float]:
    """Fraction of samples with a violated edge at threshold 0.5 (strict) and at any threshold."""
    ei = h.edge_index
    par, chi = probs[:, ei[0]], probs[:, ei[1]]
    at_half = ((par < 0.5) & (chi > 0.5)).any(1).float().mean().item()
    anywhere = (chi > par).any(1).float().mean().item()
    return at_half, anywhere


def train_and_eval(name: str, dataset: str, cfg: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    """Train one configuration and evaluate it raw and after max-projection."""
    splits = load_hmc(HMC / dataset)
    h = splits.hierarchy
    torch.manual_seed(seed)
    x_tr = torch.from_numpy(splits.train.X)
    y_tr = torch.from_numpy(splits.train.Y).float()
    model = nn.Sequential(nn.Linear(x_tr.shape[1], 500), nn.ReLU(), nn.Dropout(0.7), nn.Linear(500, 500),
                          nn.ReLU(), nn.Dropout(0.7), nn.Linear(500, h.num_labels))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = HBCELoss(h, **cfg)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(16):
            opt.zero_grad()
            criterion(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.from_numpy(splits.test.X)))
    y_te = splits.test.Y
    out: dict[str, Any] = {"dataset": dataset, "config": name, "seed": seed, "epochs": epochs,
                           "train_s": round(train_s, 1)}
    for tag, p in (("raw", probs), ("max", max_over_descendants(probs, h))):
        at_half, anywhere = violation_rates(p, h)
        out[f"auprc_{tag}"] = float(average_precision_score(y_te.ravel(), p.numpy().ravel()))
        out[f"viol05_{tag}"] = at_half
        out[f"viol_any_{tag}"] = anywhere
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the results."""
    lines = ["| dataset | training loss | AU(PRC) | Δ vs BCE | viol. @0.5 | viol. any threshold "
             "| AU(PRC) after max-projection |",
             "|---|---|---|---|---|---|---|"]
    base = {r["dataset"]: r["auprc_raw"] for r in rows if r["config"] == "bce"}
    for r in rows:
        delta = r["auprc_raw"] - base[r["dataset"]] if r["dataset"] in base else float("nan")
        lines.append(f"| {r['dataset']} | {r['config']} | {r['auprc_raw']:.3f} | {delta:+.3f} | "
                     f"{100 * r['viol05_raw']:.1f}% | {100 * r['viol_any_raw']:.1f}% | {r['auprc_max']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["eisen_FUN", "derisi_FUN", "cellcycle_GO"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("hbce_tradeoff.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.table:
        for dataset in args.datasets:
            for name in args.configs:
                row = train_and_eval(name, dataset, CONFIGS[name], args.epochs, args.seed)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(table(rows))
    _ = np  # numpy is used through sklearn's inputs
