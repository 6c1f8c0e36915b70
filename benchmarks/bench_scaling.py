"""Scaling: forward+backward time of each loss against the batch size N (on the GO hierarchy) and against the
number of edges E (synthetic DAGs with C = 4,096 labels in 13 levels, N = 256), plotted with matplotlib.

Run: ``python benchmarks/bench_scaling.py [--quick] [--device cuda] [--plot-dir docs/img]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hierarchies import benchmark_hierarchy, synthetic_dag
from _timing import median_seconds_interleaved
from bench_losses import LOSSES, inputs, loss_fn, make_step

__all__ = ["HIERARCHY_LOSSES", "plot", "run"]

# The losses whose cost depends on the edges (the others are flat in E and shown by BCE's line).
HIERARCHY_LOSSES = ["BCEWithLogitsLoss", "HBCELoss", "HierarchyPenalty", "MCLoss", "MaxConstraint",
                    "LabelGraphRefinement"]


def _grid(quick: bool) -> tuple[list[int], int, list[int], int]:
    """(N values, C of the E sweep, E values, N of the E sweep)."""
    if quick:
        return [4, 16], 256, [64, 512], 16
    return [16, 64, 256, 1024, 4096], 4096, [512, 2048, 4096, 8192, 16384], 256


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32",
        compile: bool = False) -> list[dict[str, Any]]:
    """Rows for the suite runner: milliseconds per step for each (loss, N) and (loss, E); eager only."""
    n_values, c_sweep, e_values, n_sweep = _grid(quick)
    warmup, repeat, min_time = (1, 2, 0.0) if quick else (1, 3, 0.02)
    rows: list[dict[str, Any]] = []
    h, label = benchmark_hierarchy("go")
    for n in n_values:
        x, y = inputs(h, n, device, dtype)
        steps = {name: make_step(loss_fn(name, h, device), x, y, device=device, dtype=dtype) for name in LOSSES}
        times = median_seconds_interleaved(steps, device=device, warmup=warmup, repeat=repeat, min_time=min_time)
        for name, seconds in times.items():
            rows.append({"group": "scaling", "case": f"{label} C={h.num_labels} E={h.num_edges} {dtype} eager",
                         "loss": name, "sweep": "N", "n": n, "num_labels": h.num_labels, "num_edges": h.num_edges,
                         "metric": "ms", "value": seconds * 1e3, "goal": "", "note": f"N={n}"})
    for e in e_values:
        g = synthetic_dag(c_sweep, e)
        x, y = inputs(g, n_sweep, device, dtype)
        steps = {name: make_step(loss_fn(name, g, device), x, y, device=device, dtype=dtype)
                 for name in HIERARCHY_LOSSES}
        times = median_seconds_interleaved(steps, device=device, warmup=warmup, repeat=repeat, min_time=min_time)
        for name, seconds in times.items():
            rows.append({"group": "scaling", "case": f"synthetic DAG C={c_sweep} N={n_sweep} {dtype} eager",
                         "loss": name, "sweep": "E", "n": n_sweep, "num_labels": c_sweep, "num_edges": e,
                         "metric": "ms", "value": seconds * 1e3, "goal": "", "note": f"E={e}"})
    return rows


def plot(rows: list[dict[str, Any]], directory: Path, title_suffix: str = "") -> list[Path]:
    """Write ``scaling_n.png`` and ``scaling_e.png`` (log-log, ms per step) to ``directory``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for sweep, key, xlabel, name in (("N", "n", "batch size N", "scaling_n.png"),
                                     ("E", "num_edges", "number of edges E", "scaling_e.png")):
        sel = [r for r in rows if r.get("group") == "scaling" and r["sweep"] == sweep]
        if not sel:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for loss in dict.fromkeys(r["loss"] for r in sel):
            pts = sorted((r[key], r["value"]) for r in sel if r["loss"] == loss)
            style = {"color": "black", "linewidth": 2.5} if loss == "BCEWithLogitsLoss" else {}
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=loss, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("forward+backward, ms (median)")
        ax.set_title(f"{sel[0]['case']}{title_suffix}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--plot-dir", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    result = run(quick=args.quick, device=args.device, dtype=args.dtype)
    for row in result:
        print(row)
    if args.plot_dir is not None:
        print(plot(result, args.plot_dir))
    print(f"\n({time.perf_counter() - start:.0f} s)")
