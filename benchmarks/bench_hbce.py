"""HBCELoss forward+backward time relative to BCEWithLogitsLoss, and against a per-edge loop port.

The functions compared in one case are timed *interleaved* (one sample of each in turn, medians over the
rounds), so that load from other processes on a shared machine falls on all of them alike and the ratios stay
meaningful. Three sizes: CheXpert at N=16 (a small batch, where the fixed cost per call dominates; goal <= 3x on
one CPU thread), CheXpert at N=4096 (goal <= 2x) and cellcycle_GO at N=256 (goal <= 4x), all with the default
``validate_args=True``. Run: ``python benchmarks/bench_hbce.py [--quick] [--device cuda] [--compile] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds, median_seconds_interleaved
from bench_penalties import GO_HEADER, go_hierarchy, to_markdown
from hierloss import HBCELoss, Hierarchy
from hierloss.datasets import chexpert_hierarchy
from hierloss.losses.hierarchy_penalty import DEFAULT_MODE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Timed penalty forms: the default first (the goals apply to it), then the others.
MODES = (DEFAULT_MODE, "hinge", "soft", "hard")


def per_edge_loop_loss(logits: torch.Tensor, target: torch.Tensor, edges: list[tuple[int, int]],
                       weights: list[float]) -> torch.Tensor:
    """What a user porting the reference would write: one hinge term per edge in a Python loop."""
    p = torch.sigmoid(logits)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
    for (par, chi), w in zip(edges, weights):
        loss = loss + w * (p[:, chi] - p[:, par]).clamp_min(0) / len(edges)
    return loss.mean()


def _step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        fn(x).backward()
    return run


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32",
        compile: bool = False) -> list[dict[str, Any]]:
    """Rows for the suite runner: time ratios of HBCE (each mode) to BCEWithLogits at two sizes."""
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    cases: list[tuple[str, Hierarchy, int, str, str]] = [
        ("CheXpert", chexpert_hierarchy(), 16, "<= 3.0", ""),
        ("CheXpert", chexpert_hierarchy(), 256 if quick else 4096, "<= 2.0", "<= 1.3"),
    ]
    if GO_HEADER.exists():
        cases.append(("GO", go_hierarchy(), 64 if quick else 256, "<= 4.0", "<= 1.3"))
    repeat = 5 if quick else 30
    for name, h, n, cpu_goal, gpu_goal in cases:
        x = torch.randn(n, h.num_labels, device=device, dtype=DTYPES[dtype], requires_grad=True)
        y = (torch.rand(n, h.num_labels, device=device) < 0.1).to(x.dtype)
        bce = torch.nn.BCEWithLogitsLoss()
        fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"bce": lambda z, bce=bce, y=y: bce(z, y)}
        for mode in MODES:
            crit = HBCELoss(h, mode=mode).to(device)
            fns[mode] = lambda z, crit=crit, y=y: crit(z, y)
        # The default on its per-sample path: reduction='none' (then averaged), and a target holding NaN (masked).
        per_sample = HBCELoss(h, reduction="none").to(device)
        fns["per-sample"] = lambda z, crit=per_sample, y=y: crit(z, y).mean()
        y_nan = y.clone()
        y_nan[0, 0] = float("nan")
        masked = HBCELoss(h).to(device)
        fns["nan-target"] = lambda z, crit=masked, y=y_nan: crit(z, y)
        if compile:
            fns = {k: torch.compile(f, fullgraph=True) for k, f in fns.items()}
        times = median_seconds_interleaved({k: _step(f, x) for k, f in fns.items()}, device=device, warmup=3,
                                           repeat=repeat, min_time=0.01)
        tag = f"{name} N={n} C={h.num_labels} E={h.num_edges} {dtype} {'compiled' if compile else 'eager'}"
        goal = gpu_goal if device.startswith("cuda") and compile else (cpu_goal if device == "cpu" and not compile
                                                                          else "")
        rows.append({"group": "hbce", "case": tag, "metric": "bce_median_ms", "value": times["bce"] * 1e3,
                     "goal": "", "note": "BCEWithLogitsLoss forward+backward"})
        for mode in MODES:
            rows.append({"group": "hbce", "case": f"{tag} mode={mode}", "metric": "time_ratio_vs_bce",
                         "value": times[mode] / times["bce"], "goal": goal if mode == DEFAULT_MODE else "",
                         "note": f"{times[mode] * 1e3:.3f} ms"})
        for key, what in (("per-sample", "reduction='none', then .mean()"), ("nan-target", "one NaN in the target")):
            rows.append({"group": "hbce", "case": f"{tag} mode={DEFAULT_MODE} {what}", "metric": "time_ratio_vs_bce",
                         "value": times[key] / times["bce"], "goal": "", "note": f"{times[key] * 1e3:.3f} ms"})
        if name == "GO" and not compile:
            edges = list(h.edge_indices)
            weights = [1.0] * len(edges)
            loop = median_seconds(_step(lambda z, y=y, e=edges, w=weights: per_edge_loop_loss(z, y, e, w), x),
                                  device=device,
                                  warmup=1, repeat=3 if quick else 5)
            rows.append({"group": "hbce", "case": f"{tag} mode=hinge", "metric": "speedup_vs_per_edge_loop",
                         "value": loop / times["hinge"], "goal": ">= 10", "note": f"loop {loop * 1e3:.1f} ms"})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}")
    start = time.perf_counter()
    print(to_markdown(run(quick=args.quick, device=args.device, dtype=args.dtype, compile=args.compile)))
    print(f"\n({time.perf_counter() - start:.0f} s)")
