"""Time of hierloss's level-wise MCLoss, MaxConstraint and ``coherent('max')`` against C-HMCNN's dense (N, C, C)
formulation, where the dense form still fits (peak memory of the same pairs: ``bench_memory.py``).

Run: ``python benchmarks/bench_dense.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dense import dense_bytes
from _hierarchies import benchmark_hierarchy
from _timing import median_seconds_interleaved
from bench_memory import DENSE_PAIRS, DESCRIPTIONS, build_step, dense_fits

__all__ = ["run"]


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32",
        compile: bool = False) -> list[dict[str, Any]]:
    """Rows for the suite runner: speed-up of each hierloss operation over its dense counterpart (eager)."""
    n_go = 64 if torch.device(device).type == "cuda" else 16
    cases = [("chexpert", 256)] if quick else [("chexpert", 4096), ("go", n_go)]
    warmup, repeat, min_time = (1, 2, 0.0) if quick else (1, 3, 0.02)
    rows: list[dict[str, Any]] = []
    for hname, n in cases:
        h, label = benchmark_hierarchy(hname)
        if not dense_fits(n, h.num_labels, device):
            continue
        steps = {}
        for ours, dense in DENSE_PAIRS.items():
            for name in (ours, dense):
                steps[name] = build_step({"name": name, "hierarchy": hname, "n": n, "dtype": dtype, "device": device})
        with torch.no_grad():  # the coherent steps are inference; the loss steps enable grad themselves
            inference = {k: v for k, v in steps.items() if k.endswith("coherent('max')")}
            times = median_seconds_interleaved(inference, device=device, warmup=warmup, repeat=repeat,
                                               min_time=min_time)
        training = {k: v for k, v in steps.items() if k not in inference}
        times.update(median_seconds_interleaved(training, device=device, warmup=warmup, repeat=repeat,
                                                min_time=min_time))
        case = f"{label} N={n} C={h.num_labels} E={h.num_edges} {dtype} eager"
        for ours, dense in DENSE_PAIRS.items():
            rows.append({"group": "dense", "case": case, "loss": ours, "metric": "speedup_vs_dense",
                         "value": times[dense] / times[ours], "goal": "",
                         "note": f"{ours} {times[ours] * 1e3:.3g} ms, {dense} {times[dense] * 1e3:.4g} ms "
                                 f"({DESCRIPTIONS[dense]}; one (N, C, C) tensor = "
                                 f"{dense_bytes(n, h.num_labels) / 2**20:.3g} MiB)"})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    start = time.perf_counter()
    for row in run(quick=args.quick, device=args.device, dtype=args.dtype):
        print(row)
    print(f"\n({time.perf_counter() - start:.0f} s)")
