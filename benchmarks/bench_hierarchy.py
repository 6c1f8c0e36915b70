"""Building and using a ``Hierarchy`` at full-Gene-Ontology size: time and peak memory.

Two hierarchies of 100,000 labels (``--quick``: 2,000), larger than the full Gene Ontology's ~45,000 terms:

* a random layered DAG with 200,000 edges (``--quick``: 4,000), 3 roots and 15 levels: every non-root label has
  one parent on the level just above, and the other edges join random pairs from a shallower to a deeper level,
  so that most labels have several parents;
* a star: one root with 99,999 leaves (``--quick``: 1,999), the widest possible level.

Measured on each, every operation on a freshly built hierarchy (nothing cached from an earlier call):
``Hierarchy(labels, edges)``; the first ``propagate`` of an ``(N, C)`` float 0/1 matrix at N = 256 (which also
computes the heights and the level plan) and a second one; ``ancestors`` of a deepest label; ``descendants`` of a
root; ``ancestor_matrix(sparse=True)`` (its size ``K`` in the note); ``HBCELoss(h)`` construction; one
forward+backward step of ``HBCELoss`` (default mode) and, for scale, of ``BCEWithLogitsLoss`` at N = 256. Times
are medians of a few runs; memory is the rise of the resident set's high-water mark during the first run
(``VmHWM``, reset through ``/proc/self/clear_refs``; Linux only) and the peak of the whole process. Each hierarchy
runs in its own fresh subprocess (``--quick``: all in one process, a smoke test).

Run: ``python benchmarks/bench_hierarchy.py [--quick] [--device cuda] [--threads 1]`` (the suite runner
``benchmarks/run.py --only hierarchy`` calls :func:`run`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hierloss import HBCELoss, Hierarchy

__all__ = ["random_dag_edges", "run", "star_edges"]

MIB = 2**20
#: Operations with a goal (seconds, full size only): "a 100,000-label, 200,000-edge DAG builds, propagates and
#: yields ancestors in at most a few seconds".
GOAL_SECONDS = {"build": "<= 3.0", "propagate (first)": "<= 3.0", "ancestors (deepest label)": "<= 3.0"}


def random_dag_edges(num_labels: int, num_edges: int, *, depth: int = 15, roots: int = 3,
                     seed: int = 0) -> tuple[list[str], list[tuple[str, str]]]:
    """Label names and ``(parent, child)`` name pairs of a random layered DAG with exactly these sizes.

    Labels ``0 .. roots-1`` are roots; the others are spread evenly over levels ``1 .. depth`` and each gets one
    parent drawn from the level just above (so the longest path has ``depth`` edges). The other
    ``num_edges - (num_labels - roots)`` edges join a random label to a random label of any shallower level (no
    duplicates). The column order is a random permutation, so that it carries no topological information.
    """
    others = num_labels - roots
    if others < depth or not others <= num_edges:
        raise ValueError(f"need num_labels - roots >= depth and num_edges >= num_labels - roots, got "
                         f"{num_labels} labels, {num_edges} edges, {roots} roots, depth {depth}")
    rng = np.random.default_rng(seed)
    level = np.concatenate([np.zeros(roots, dtype=np.int64), np.sort(np.arange(others) % depth + 1)])
    first = np.searchsorted(level, np.arange(depth + 2))  # first label of each level (labels sorted by level)
    child = np.arange(roots, num_labels)
    above_start, above_end = first[level[child] - 1], first[level[child]]
    parent = above_start + (rng.random(others) * (above_end - above_start)).astype(np.int64)
    pairs = set(zip(parent.tolist(), child.tolist()))
    while len(pairs) < num_edges:
        k = num_edges - len(pairs)
        c = rng.integers(roots, num_labels, size=k)
        p = (rng.random(k) * first[level[c]]).astype(np.int64)  # any label of a shallower level
        pairs.update(zip(p.tolist(), c.tolist()))
    chosen = sorted(pairs)  # update() adds at most k pairs, so exactly num_edges
    names = [f"GO:{i:07d}" for i in rng.permutation(num_labels)]
    return names, [(names[p], names[c]) for p, c in chosen]


def star_edges(num_labels: int) -> tuple[list[str], list[tuple[str, str]]]:
    """One root ``'root'`` with ``num_labels - 1`` leaves."""
    names = ["root", *(f"leaf{i}" for i in range(1, num_labels))]
    return names, [("root", leaf) for leaf in names[1:]]


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_rss_increase(fn: Callable[[], Any], collect: bool = True) -> tuple[Any, int | None]:
    """``fn()`` and the bytes by which it raised the resident set's high-water mark above the size before it
    (after a garbage collection unless ``collect`` is False: ~0.1 s each with torch loaded)."""
    if collect:
        gc.collect()
    base = _rss_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        base = None
    out = fn()
    peak = _rss_kib("VmHWM")
    return out, (None if base is None or peak is None else max(0, peak - base) * 1024)


def _measure(fn: Callable[[], Any], repeat: int, collect: bool) -> tuple[Any, float, int | None]:
    """Last result, median seconds over ``repeat`` runs, and the peak RSS increase of the first run."""
    start = time.perf_counter()
    out, peak = _peak_rss_increase(fn, collect)
    times = [time.perf_counter() - start]
    for _ in range(repeat - 1):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times), peak


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _case_rows(case: str, names: list[str], edges: list[tuple[str, str]], *, n: int, device: str, repeat: int,
               quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    collect = not quick  # quick: skip the garbage collections before each memory sample (they cost most of its time)

    def add(what: str, seconds: float, peak: int | None, note: str = "") -> None:
        goal = "" if quick or "star" in case else GOAL_SECONDS.get(what, "")
        rows.append({"group": "hierarchy", "case": f"{case} {what}", "metric": "seconds", "value": seconds,
                     "goal": goal, "note": note})
        if peak is not None:
            rows.append({"group": "hierarchy", "case": f"{case} {what}", "metric": "peak_rss_increase_MiB",
                         "value": peak / MIB, "goal": "",
                         "note": "rise of the resident set's high-water mark during the first run"})

    h, seconds, peak = _measure(lambda: Hierarchy(names, edges), repeat, collect)
    add("build", seconds, peak, f"Hierarchy(labels, edges), {len(names)} labels, {len(edges)} edges")

    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(n, h.num_labels, generator=gen) < 0.01).float().to(device)

    def fresh() -> Hierarchy:
        return Hierarchy(names, edges)

    def first_propagate() -> Any:
        g = fresh()
        start = time.perf_counter()
        g.propagate(y)
        _sync(device)
        return time.perf_counter() - start

    times, peaks = [], []
    for _ in range(repeat):
        t, p = _peak_rss_increase(first_propagate, collect)
        times.append(t)
        peaks.append(p)
    add("propagate (first)", statistics.median(times), peaks[0],
        f"first h.propagate(y) on a new hierarchy, y ({n}, C) float on {device}: heights, plan, kernel")
    h.propagate(y)
    _, seconds, peak = _measure(lambda: (h.propagate(y), _sync(device)), repeat, collect)
    add("propagate (again)", seconds, peak, "the same call again (heights cached; the plan is rebuilt per call)")

    deepest = int(np.argmax(h.depths))
    deep_label = h.labels[deepest]
    root = h.roots[0]

    def timed_on_fresh(query: Callable[[Hierarchy], Any]) -> tuple[Any, float, int | None]:
        results, times, peaks = [], [], []
        for _ in range(repeat):
            g = fresh()

            def call(g: Hierarchy = g) -> Any:
                start = time.perf_counter()
                out = query(g)
                return out, time.perf_counter() - start

            (out, t), p = _peak_rss_increase(call, collect)
            results.append(out)
            times.append(t)
            peaks.append(p)
        return results[-1], statistics.median(times), peaks[0]

    anc, seconds, peak = timed_on_fresh(lambda g: g.ancestors(deep_label))
    add("ancestors (deepest label)", seconds, peak,
        f"first call on a new hierarchy; depth {h.depths[deepest]}, {len(anc)} ancestors")
    desc, seconds, peak = timed_on_fresh(lambda g: g.descendants(root))
    add("descendants (a root)", seconds, peak, f"first call on a new hierarchy; {len(desc)} descendants")
    matrix, seconds, peak = timed_on_fresh(lambda g: g.ancestor_matrix(sparse=True))
    add("ancestor_matrix(sparse=True)", seconds, peak,
        f"first call on a new hierarchy; K = {matrix._nnz()} (ancestor, descendant) pairs "
        f"(the dense form would take {h.num_labels ** 2 / 1e6:,.0f} MB)")
    del matrix

    def make_loss() -> Any:
        g = fresh()
        start = time.perf_counter()
        loss = HBCELoss(g).to(device)
        _sync(device)
        return loss, time.perf_counter() - start

    times, peaks = [], []
    for _ in range(repeat):
        (loss, t), p = _peak_rss_increase(make_loss, collect)
        times.append(t)
        peaks.append(p)
    add("HBCELoss(h)", statistics.median(times), peaks[0],
        f"construction on a new hierarchy, then .to({device}) (edge plan: hierloss.losses._hbce_backend.edge_plan)")

    x = torch.randn(n, h.num_labels, generator=gen).to(device).requires_grad_()
    bce = torch.nn.BCEWithLogitsLoss()

    def step(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            x.grad = None
            fn(x, y).backward()
            _sync(device)
        return run

    for what, fn in (("HBCELoss step", loss), ("BCEWithLogitsLoss step", bce)):
        step(fn)()
        _, seconds, peak = _measure(step(fn), max(repeat, 5), collect)
        add(what, seconds, peak, f"forward+backward, N={n}, after one warm-up step"
            + (" (default mode)" if fn is loss else " (for scale: the same step without the hierarchy)"))
    return rows


CASES_FULL = (("random DAG", 100_000, 200_000), ("star", 100_000, 99_999))
CASES_QUICK = (("random DAG", 2_000, 4_000), ("star", 2_000, 1_999))


def _worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One case, in this (fresh) process: its rows, then the process's peak resident set."""
    torch.set_num_threads(spec["threads"])
    shape, num_labels, num_edges = spec["shape"], spec["num_labels"], spec["num_edges"]
    names, edges = random_dag_edges(num_labels, num_edges) if shape == "random DAG" else star_edges(num_labels)
    case = f"{shape} C={num_labels} E={num_edges}"
    rows = _case_rows(case, names, edges, n=spec["n"], device=spec["device"], repeat=spec["repeat"],
                      quick=spec["quick"])
    peak = _rss_kib("VmHWM")
    if peak is not None:
        where = "the benchmark's process so far (--quick)" if spec["quick"] else "this case's process"
        rows.append({"group": "hierarchy", "case": f"{case} whole process", "metric": "peak_rss_MiB",
                     "value": peak / 1024, "goal": "", "note": f"{where}: Python, torch, the label names and edge "
                     "list, the inputs (256, C) and every step above"})
    return rows


def run(*, quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Rows for the suite runner: build / propagate / queries / HBCELoss time and peak memory at GO size.

    In full runs each hierarchy is measured in a fresh Python subprocess (with ``MALLOC_MMAP_THRESHOLD_=65536``, so
    that large buffers are returned to the system when freed and each peak is seen) using this process's torch
    threads; ``quick`` runs in this process.
    """
    threads = torch.get_num_threads()
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(threads)}
    rows: list[dict[str, Any]] = []
    for shape, num_labels, num_edges in CASES_QUICK if quick else CASES_FULL:
        spec = {"shape": shape, "num_labels": num_labels, "num_edges": num_edges, "n": 256, "device": device,
                "repeat": 1 if quick else 3, "quick": quick, "threads": threads}
        if quick:  # a smoke test: in this process, so that it takes seconds (memory rows are then rough)
            rows += _worker(spec)
            continue
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"hierarchy benchmark worker failed for {shape}:\n{proc.stderr[-3000:]}")
        rows += json.loads(proc.stdout.strip().splitlines()[-1])
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table."""
    lines = ["| case | metric | value | goal | note |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['metric']} | {r['value']:.4g} | {r['goal']} | {r['note']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}")
    start = time.perf_counter()
    print(to_markdown(run(quick=args.quick, device=args.device)))
    print(f"\n({time.perf_counter() - start:.0f} s)")
