"""``hierloss.metrics.coherent`` ('max' and 'min') against C-HMCNN's dense ``(N, L, L)`` formulation.

The dense form (Giunchiglia & Lukasiewicz, 2020, ``get_constr_out``) multiplies a ``(L, L)`` 0/1 matrix ``R``
(``R[i, j] = 1`` when ``j`` is ``i`` or one of its descendants) by the broadcast scores and takes the max over the
last axis: ``max(R * h.unsqueeze(1), dim=2)``, an ``(N, L, L)`` intermediate. Its 'min' twin uses the ancestor
matrix on ``1 − h``: ``1 − max(A * (1 − h).unsqueeze(1), dim=2)``. C-HMCNN computes in float64; both sides here use
float32 (the dense peak would double in float64). Every dense result is checked equal to hierloss's in the run.

Time: median after warm-up (``benchmarks/_timing.py``). Peak memory: the process's peak resident set size
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before the call) minus its resident set size just
before the call, for one call; inputs, ``R`` and hierloss's cached propagation plan exist before it.
``malloc_trim(0)`` first releases free heap pages, so that memory the call reuses from glibc's heap becomes
newly resident and counts. Threads: 1 by default (see :func:`run`).

Run: ``python benchmarks/bench_coherent.py [--quick]``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dense import dense_constr_out, descendant_matrix
from _timing import median_seconds
from bench_memory import _status_kib
from hierloss import Hierarchy
from hierloss.datasets import load_hmc_arff
from hierloss.metrics import coherent

SHARED_HMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmc"
Tensor = torch.Tensor
_LIBC = ctypes.CDLL("libc.so.6")  # glibc (Linux), for malloc_trim
DATASETS = {"cellcycle_GO": SHARED_HMC / "cellcycle_GO" / "cellcycle_GO.train.arff",
            "cellcycle_FUN": SHARED_HMC / "cellcycle_FUN" / "cellcycle_FUN.train.arff"}


def dense_min(h: Tensor, a: Tensor) -> Tensor:
    """The 'min' twin of C-HMCNN's ``get_constr_out`` for scores in [0, 1]: ``1 − max_j A[i, j] · (1 − h[n, j])``."""
    return 1 - dense_constr_out(1 - h, a)


def peak_extra_bytes(fn: Callable[[], Any]) -> int:
    """Peak resident memory of one ``fn()`` call above the resident memory just before it (Linux)."""
    gc.collect()
    _LIBC.malloc_trim(0)  # free heap pages leave the resident set, so reusing them during fn() shows in the peak
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = _status_kib("VmRSS")
    out = fn()
    peak = _status_kib("VmHWM")
    del out
    return max(peak - before, 0) * 1024


def _matrices(hierarchy: Hierarchy) -> tuple[Tensor, Tensor]:
    """``R`` (self or descendant, as C-HMCNN builds it) and ``A`` (self or ancestor) as float32 ``(L, L)``."""
    r = descendant_matrix(hierarchy)
    return r, r.T.contiguous()


def _row(case: str, metric: str, value: float, note: str = "") -> dict[str, Any]:
    return {"group": "coherent", "case": case, "metric": metric, "value": value, "goal": "", "note": note}


def run(quick: bool = False, *, threads: int | None = 1, device: str = "cpu", dtype: str = "fp32",
        compile: bool = False) -> list[dict[str, Any]]:
    """Rows for the suite runner: time and peak memory of both forms, on ``threads`` CPU threads.

    ``threads=1`` by default: on a shared machine, torch's OpenMP threads wait for descheduled siblings, which
    makes multi-threaded timings of these millisecond-scale calls swing by 100×. ``None`` keeps torch's setting.
    ``device``/``dtype``/``compile`` are accepted for the suite runner and unused.
    """
    del device, dtype, compile
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(previous)


def _run(quick: bool) -> list[dict[str, Any]]:
    """Every timing first, then every peak."""
    plans = {"cellcycle_GO": (64 if quick else 512, (16,) if quick else (16, 64)),
             "cellcycle_FUN": (64 if quick else 512, (64,) if quick else (512,))}
    cases: list[tuple[str, Callable[[], Tensor], Callable[[], Tensor] | None]] = []
    for name, path in DATASETS.items():
        if not path.exists():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        n_full, dense_sizes = plans[name]
        cases += _cases(name, load_hmc_arff(path).hierarchy, n_full, dense_sizes)
    repeat = 3 if quick else 10
    rows: list[dict[str, Any]] = []
    for case, ours, dense in cases:
        ours()  # builds and caches the propagation plan
        t_ours = median_seconds(ours, warmup=3, repeat=repeat, min_time=0.02)
        rows.append(_row(case, "hierloss_median_ms", t_ours * 1e3))
        if dense is not None:
            torch.testing.assert_close(dense(), ours(), rtol=0, atol=1e-6)
            t_dense = median_seconds(dense, warmup=1, repeat=max(3, repeat // 2))
            rows += [_row(case, "dense_median_ms", t_dense * 1e3), _row(case, "speedup_vs_dense", t_dense / t_ours)]
    for case, ours, dense in cases:
        rows.append(_row(case, "hierloss_peak_mib", peak_extra_bytes(ours) / 2**20))
        if dense is not None:
            rows.append(_row(case, "dense_peak_mib", peak_extra_bytes(dense) / 2**20))
    return rows


def _cases(name: str, h: Hierarchy, n_full: int,
           dense_sizes: tuple[int, ...]) -> list[tuple[str, Callable[[], Tensor], Callable[[], Tensor] | None]]:
    """``(case, hierloss call, dense call or None)`` for each size and method; inputs and ``R`` built here."""
    cases: list[tuple[str, Callable[[], Tensor], Callable[[], Tensor] | None]] = []
    r, a = _matrices(h)
    gen = torch.Generator().manual_seed(0)
    for n in sorted({n_full, *dense_sizes}):
        x = torch.rand(n, h.num_labels, generator=gen)
        for method in ("max", "min"):
            case = f"{name} N={n} L={h.num_labels} E={h.num_edges} fp32 method={method}"

            def ours(x: Tensor = x, method: str = method) -> Tensor:
                return coherent(x, h, method)  # type: ignore[no-any-return]

            def dense(x: Tensor = x, method: str = method) -> Tensor:
                return dense_constr_out(x, r) if method == "max" else dense_min(x, a)

            cases.append((case, ours, dense if n in dense_sizes else None))
    return cases


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table."""
    lines = ["| case | metric | value | note |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['metric']} | {r['value']:.4g} | {r['note']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: keep torch's default)")
    args = parser.parse_args()
    start = time.perf_counter()
    threads = args.threads or None
    print(f"torch {torch.__version__}, {threads or torch.get_num_threads()} thread(s)")
    print(to_markdown(run(args.quick, threads=threads)))
    print(f"\n({time.perf_counter() - start:.0f} s)")
