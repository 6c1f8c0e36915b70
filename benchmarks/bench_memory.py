"""Peak memory of one forward+backward step of each loss at GO size, and of C-HMCNN's dense (N, C, C) form.

What is measured: the extra memory one step needs above what is already held before it (inputs, targets, the
loss's buffers, the dense form's ``(C, C)`` matrix ``R``), after one warm-up step.

* CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the step (the caching allocator's
  own reserve is not counted).
* CPU: the resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) minus ``VmRSS`` before the step, in
  a fresh Python subprocess (one per case in full runs, one for all cases with ``--quick``). The high-water mark
  is reset just before the step by writing ``5`` to ``/proc/self/clear_refs``, and the subprocess runs with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every buffer of 64 KiB or more with its own ``mmap`` and
  returns it on free: freed memory is never reused unseen and ``VmRSS`` before the step is not inflated by
  earlier steps. (``ru_maxrss`` alone cannot be used in-process: it never goes down.)

Run: ``python benchmarks/bench_memory.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dense import dense_bytes, dense_constr_out, dense_mcloss, descendant_matrix
from _hierarchies import benchmark_hierarchy
from _timing import cuda_peak_bytes
from bench_losses import LOSSES, bce_on_probs, inputs, loss_fn, make_step
from hierloss.metrics import coherent

__all__ = ["DENSE_PAIRS", "build_step", "dense_fits", "measure", "peak_rss_increase", "run"]

MIB = 2**20
RSS_RESOLUTION = MIB  # below this, RSS differences are allocator noise (small buffers come from reused heap pages)

# hierloss operation -> its C-HMCNN dense counterpart (both built by build_step).
DENSE_PAIRS = {
    "MCLoss": "dense MCLoss",
    "MaxConstraint": "dense MaxConstraint",
    "coherent('max')": "dense coherent('max')",
}
DESCRIPTIONS = {
    "dense MCLoss": "C-HMCNN get_constr_out twice + BCE, forward+backward",
    "dense MaxConstraint": "BCE(get_constr_out(sigmoid(logits), R)), forward+backward",
    "coherent('max')": "coherent(sigmoid(logits), h), inference (no grad)",
    "dense coherent('max')": "get_constr_out(sigmoid(logits), R), inference (no grad)",
}


def build_step(spec: dict[str, Any]) -> Callable[[], None]:
    """A zero-argument step for ``spec`` = ``{name, hierarchy, n, dtype, device}``; allocates its inputs now."""
    h, _ = benchmark_hierarchy(spec["hierarchy"])
    device, dtype, name = spec["device"], spec["dtype"], spec["name"]
    x, y = inputs(h, spec["n"], device, dtype)
    if name in LOSSES:
        return make_step(loss_fn(name, h, device), x, y, device=device, dtype=dtype)
    if name.startswith("dense "):
        r = descendant_matrix(h, x.dtype).to(device)
    if name == "dense MCLoss":
        return make_step(lambda z, t: dense_mcloss(z, t, r), x, y, device=device, dtype=dtype)
    if name == "dense MaxConstraint":
        return make_step(lambda z, t: bce_on_probs(dense_constr_out(torch.sigmoid(z), r), t), x, y,
                         device=device, dtype=dtype)
    probs = torch.sigmoid(x.detach())
    if name == "coherent('max')":
        return lambda: (coherent(probs, h), None)[1]
    if name == "dense coherent('max')":
        return lambda: (dense_constr_out(probs, r), None)[1]
    raise ValueError(f"unknown memory case {name!r}")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_increase(step: Callable[[], Any]) -> int:
    """Bytes by which one ``step()`` raises this process's resident set above its size just before (Linux).

    Resets the high-water mark through ``/proc/self/clear_refs``; accurate to about 1 MiB (smaller buffers come
    from heap pages glibc already holds).
    """
    gc.collect()
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step()
    peak = _status_kib("VmHWM")
    return max(0, peak - base) * 1024


def _cpu_peak_in_process(spec: dict[str, Any]) -> int:
    """Worker side: peak RSS increase of one step, after a warm-up step (see the module docstring)."""
    step = build_step(spec)
    with torch.no_grad() if spec["name"].endswith("coherent('max')") else torch.enable_grad():
        step()
        return peak_rss_increase(step)


def _cuda_peak(spec: dict[str, Any]) -> int:
    step = build_step(spec)
    with torch.no_grad() if spec["name"].endswith("coherent('max')") else torch.enable_grad():
        step()
        return cuda_peak_bytes(step, spec["device"])


def measure(specs: list[dict[str, Any]], *, fresh_process: bool = True) -> list[int]:
    """Peak extra bytes of one step for each spec (all specs on one device)."""
    if not specs:
        return []
    if torch.device(specs[0]["device"]).type == "cuda":
        return [_cuda_peak(s) for s in specs]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    batches = [[s] for s in specs] if fresh_process else [specs]
    out: list[int] = []
    for batch in batches:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(batch)], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory worker failed for {[s['name'] for s in batch]}:\n{proc.stderr[-3000:]}")
        out += json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def dense_fits(n: int, num_labels: int, device: str) -> bool:
    """Whether the dense form is run: one (N, C, C) float32 tensor at most 2 GiB on CPU (the backward holds
    about two, on a machine shared with other work), a tenth of the GPU's memory on CUDA."""
    limit = (torch.cuda.get_device_properties(device).total_memory // 10 if torch.device(device).type == "cuda"
             else 2 * 2**30)
    return dense_bytes(n, num_labels) <= limit


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32",
        compile: bool = False) -> list[dict[str, Any]]:
    """Rows for the suite runner: peak step memory of every loss at GO size, and hierloss vs the dense form.

    Eager only (``compile`` is ignored: the compiled graphs' memory is not measured).
    """
    h, label = benchmark_hierarchy("go")
    c = h.num_labels
    n_losses = 64 if quick else 256
    base = {"hierarchy": "go", "dtype": dtype, "device": device}
    loss_names = ["BCEWithLogitsLoss", "HBCELoss", "MCLoss"] if quick else list(LOSSES)
    specs = [{**base, "name": name, "n": n_losses} for name in loss_names]
    n_dense = 64 if torch.device(device).type == "cuda" else (1 if quick else 16)
    pairs = [(ours, dense) for ours, dense in DENSE_PAIRS.items() if not quick or ours != "MaxConstraint"]
    for ours, dense in pairs:
        specs.append({**base, "name": ours, "n": n_dense})
        if dense_fits(n_dense, c, device):
            specs.append({**base, "name": dense, "n": n_dense})
    peaks = dict(zip([(s["name"], s["n"]) for s in specs], measure(specs, fresh_process=not quick)))
    what = "CUDA max allocated" if torch.device(device).type == "cuda" else "peak RSS increase, fresh subprocess"
    rows: list[dict[str, Any]] = []
    case = f"{label} N={n_losses} C={c} E={h.num_edges} {dtype} eager"
    bce = peaks[("BCEWithLogitsLoss", n_losses)]
    for name in loss_names:
        peak = peaks[(name, n_losses)]
        rows.append({"group": "memory", "case": case, "loss": name, "metric": "peak_MiB", "value": peak / MIB,
                     "goal": "", "note": f"{peak / max(bce, 1):.2f}× BCE ({what})"})
    case = f"{label} N={n_dense} C={c} E={h.num_edges} {dtype} eager"
    for ours, dense in pairs:
        peak = peaks[(ours, n_dense)]
        rows.append({"group": "memory", "case": case, "loss": ours, "metric": "peak_MiB", "value": peak / MIB,
                     "goal": "", "note": DESCRIPTIONS.get(ours, "forward+backward") + f" ({what})"})
        if (dense, n_dense) in peaks:
            rows.append({"group": "memory", "case": case, "loss": dense, "metric": "peak_MiB",
                         "value": peaks[(dense, n_dense)] / MIB, "goal": "", "note": DESCRIPTIONS[dense]})
            floor = RSS_RESOLUTION if torch.device(device).type == "cpu" else 1
            bound = " (lower bound: hierloss's peak is below the 1 MiB RSS resolution, counted as 1 MiB)" if (
                peak < floor) else ""
            rows.append({"group": "memory", "case": case, "loss": ours, "metric": "memory_ratio_dense_vs_hierloss",
                         "value": peaks[(dense, n_dense)] / max(peak, floor), "goal": ">= 10",
                         "note": f"{dense}: {peaks[(dense, n_dense)] / MIB:.1f} MiB, {ours}: {peak / MIB:.2f} MiB"
                                 + bound})
    big = dense_bytes(n_losses, c)
    rows.append({"group": "memory", "case": f"{label} N={n_losses} C={c}", "loss": "dense (N, C, C) form",
                 "metric": "one_dense_tensor_MiB", "value": big / MIB, "goal": "",
                 "note": "size of one (N, C, C) float32 tensor at the loss-table size; not run"})
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps([_cpu_peak_in_process(spec) for spec in json.loads(sys.argv[2])]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    start = time.perf_counter()
    for row in run(quick=args.quick, device=args.device, dtype=args.dtype):
        print(row)
    print(f"\n({time.perf_counter() - start:.0f} s)")
