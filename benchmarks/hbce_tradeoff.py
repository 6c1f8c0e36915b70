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
from torch import nn

from hierloss import HBCELoss
from hierloss.datasets import load_hmc
from hierloss.metrics import average_precision, coherent, violation_rate

HMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmc"

CONFIGS: dict[str, dict[str, Any]] = {
    "bce": {"scale": 0.0, "mode": "hinge"},
    "hard λ=1 (reference)": {"scale": 1.0, "mode": "hard"},
    "hinge sum λ=1": {"scale": 1.0, "mode": "hinge", "edge_reduction": "sum"},
    "hinge mean λ=0.1": {"scale": 0.1, "mode": "hinge"},
    "hinge mean λ=0.3": {"scale": 0.3, "mode": "hinge"},
    "hinge mean λ=1": {"scale": 1.0, "mode": "hinge"},
    "hinge mean λ=3": {"scale": 3.0, "mode": "hinge"},
    "hinge mean λ=10": {"scale": 10.0, "mode": "hinge"},
    "squared_hinge mean λ=1": {"scale": 1.0, "mode": "squared_hinge"},
    "squared_hinge mean λ=10": {"scale": 10.0, "mode": "squared_hinge"},
    "soft τ=0.1 mean λ=1": {"scale": 1.0, "mode": "soft", "temperature": 0.1},
    "soft τ=0.1 mean λ=10": {"scale": 10.0, "mode": "soft", "temperature": 0.1},
    "soft τ=0.5 mean λ=10": {"scale": 10.0, "mode": "soft", "temperature": 0.5},
    "logit_hinge mean λ=0.01": {"scale": 0.01, "mode": "logit_hinge"},
    "logit_hinge mean λ=0.03": {"scale": 0.03, "mode": "logit_hinge"},
    "logit_hinge mean λ=0.1": {"scale": 0.1, "mode": "logit_hinge"},
    "logit_hinge mean λ=0.3": {"scale": 0.3, "mode": "logit_hinge"},
    "logit_hinge mean λ=1": {"scale": 1.0, "mode": "logit_hinge"},
}


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
    for tag, p in (("raw", probs), ("max", coherent(probs, h, "max"))):
        out[f"auprc_{tag}"] = float(average_precision(p, y_te, average="micro"))  # over every label
        out[f"viol05_{tag}"] = float(violation_rate(p, h, threshold=0.5))
        out[f"viol_any_{tag}"] = float(violation_rate(p, h, threshold=None))
    return out


def _grouped(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows by (dataset, config), in first-seen order; the last row wins for a repeated seed."""
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["config"]), {})[r["seed"]] = r
    return {k: [v[s] for s in sorted(v)] for k, v in groups.items()}


def _deltas(groups: dict[tuple[str, str], list[dict[str, Any]]], key: tuple[str, str]) -> list[float]:
    """AU(PRC) minus BCE's on the same dataset and seed (paired by seed)."""
    base = {r["seed"]: r["auprc_raw"] for r in groups.get((key[0], "bce"), [])}
    return [r["auprc_raw"] - base[r["seed"]] for r in groups[key] if r["seed"] in base]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the results: means over seeds; Δ vs BCE paired by seed, with its range over seeds."""
    lines = ["| dataset | training loss | seeds | AU(PRC) | Δ vs BCE (min … max) | viol. @0.5 | viol. any threshold "
             "| AU(PRC) after max-projection |",
             "|---|---|---|---|---|---|---|---|"]
    groups = _grouped(rows)
    for key, rs in groups.items():
        d = _deltas(groups, key)
        delta = "n/a" if not d else f"{np.mean(d):+.4f}" + (f" ({min(d):+.4f} … {max(d):+.4f})" if len(d) > 1 else "")
        lines.append(f"| {key[0]} | {key[1]} | {len(rs)} | {np.mean([r['auprc_raw'] for r in rs]):.4f} | {delta} | "
                     f"{100 * np.mean([r['viol05_raw'] for r in rs]):.1f}% | "
                     f"{100 * np.mean([r['viol_any_raw'] for r in rs]):.1f}% | "
                     f"{np.mean([r['auprc_max'] for r in rs]):.4f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Trade-off curve: ΔAU(PRC) vs BCE and the any-threshold violation rate against λ, one line per dataset.

    Lines: the probability hinge and the logit hinge, averaged over edges; open markers: the squared hinge and the
    soft indicator (τ = 0.1). Means over seeds; BCE is λ = 0 and drawn at the left edge of the log axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _grouped(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, (ax_auc, ax_viol) = plt.subplots(1, 2, figsize=(14, 4.8))
    floor = 0.003  # where λ = 0 (plain BCE) is drawn on the log axis
    families = (("hinge", "-o"), ("logit_hinge", "--D"), ("squared_hinge", "s"), ("soft", "^"))
    lines = ("hinge", "logit_hinge")
    for i, dataset in enumerate(datasets):
        color = f"C{i}"
        for mode, style in families:
            pts = []
            for (ds, name), rs in groups.items():
                cfg = CONFIGS.get(name)
                if ds != dataset or cfg is None or cfg.get("edge_reduction", "mean") != "mean":
                    continue
                if name == "bce" and mode in lines:
                    lam = floor
                elif cfg["mode"] == mode and cfg["scale"] > 0 and cfg.get("temperature", 0.1) == 0.1:
                    lam = cfg["scale"]
                else:
                    continue
                pts.append((lam, float(np.mean(_deltas(groups, (ds, name)))),
                            100 * float(np.mean([r["viol_any_raw"] for r in rs]))))
            if not pts:
                continue
            pts.sort()
            lam_, d_, v_ = zip(*pts)
            label = f"{dataset}, {mode}"
            fill = "none" if mode not in lines else color
            ax_auc.plot(lam_, d_, style, color=color, mfc=fill, label=label)
            ax_viol.plot(lam_, v_, style, color=color, mfc=fill, label=label)
    for ax in (ax_auc, ax_viol):
        ax.set_xscale("log")
        ax.set_xlabel("λ (scale), edge_reduction='mean'; leftmost point: BCE (λ = 0)")
        ax.grid(True, alpha=0.3)
    ax_auc.axhline(-0.01, color="grey", ls="--", lw=1)
    ax_auc.text(floor * 1.2, -0.0095, "goal: cost ≤ 0.01", color="grey", fontsize=8, va="bottom")
    ax_auc.set_ylabel("test AU(PRC) − BCE's")
    ax_viol.set_ylabel("test samples with p_child > p_parent on some edge (%)")
    handles, labels = ax_viol.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle("HBCELoss trade-off (solid: mode='hinge'; dashed: 'logit_hinge', the default; open markers: "
                 "squared_hinge, soft τ=0.1)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["eisen_FUN", "derisi_FUN", "cellcycle_GO"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("hbce_tradeoff.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the table (and --plot) of --out")
    parser.add_argument("--plot", type=Path, help="save the trade-off curve of --out to this PNG")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.table:
        for seed in args.seeds:
            for dataset in args.datasets:
                for name in args.configs:
                    row = train_and_eval(name, dataset, CONFIGS[name], args.epochs, seed)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
