"""The hierloss benchmark suite: speed and memory of every loss, penalty estimation, and scaling, in one command.

    python benchmarks/run.py                      # everything, on CUDA when available, else CPU
    python benchmarks/run.py --quick              # small sizes, few repeats: the CI smoke test (< 1 min)
    python benchmarks/run.py --device cuda --compile --dtype bf16 --out results.json

Prints the machine, one markdown table per group and a table of the project's goals beside the measurements;
``--out`` also writes every row as JSON. Timings are medians of repeated runs after warm-up, and every ratio is
taken within one run. ``--compile`` adds ``torch.compile(fullgraph=True)`` timings beside the eager ones.
``--dtype bf16|fp16`` feeds the losses logits and targets in that dtype under ``torch.autocast``.

Exits 1 (after printing what it has) when any group failed, e.g. when a loss listed in
``bench_losses.LOSSES`` is not exported by hierloss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dense
import bench_hbce
import bench_hierarchy
import bench_losses
import bench_memory
import bench_penalties
import bench_propagation
import bench_scaling
from _timing import machine

HERE = Path(__file__).resolve().parent
CASES: list[tuple[str, int]] = []  # --cases: the (hierarchy, N) cases of the 'losses' group (empty: all)

GROUPS = ["losses", "propagation", "hbce", "dense", "coherent", "memory", "penalties", "scaling", "hierarchy", "peers"]
TITLES = {
    "losses": "Forward+backward time relative to BCEWithLogitsLoss (every loss)",
    "propagation": "The propagation engine: time relative to BCE, compiled against eager, time and memory "
                   "against depth (bench_propagation.py)",
    "hbce": "HBCELoss modes, and HBCELoss against the per-edge loop (bench_hbce.py)",
    "dense": "hierloss against C-HMCNN's dense (N, C, C) form: time (bench_dense.py)",
    "coherent": "coherent() against the dense form (bench_coherent.py)",
    "memory": "Peak memory of one forward+backward step (bench_memory.py)",
    "penalties": "Penalty estimation against the reference's per-edge pandas filtering (bench_penalties.py)",
    "scaling": "Scaling: ms per forward+backward step against N and E (bench_scaling.py)",
    "hierarchy": "Hierarchy at full-Gene-Ontology size: build, propagate, queries, HBCELoss (bench_hierarchy.py)",
    "peers": "ASL, focal, ZLPR and multi-label softmax against their authors' code or formula (bench_peers.py)",
}


def goal_met(value: float, goal: str) -> bool | None:
    """Whether ``value`` meets a goal written ``'<= 2.0'`` or ``'>= 10'``; ``None`` for no goal."""
    if not goal:
        return None
    op, bound = goal.split()
    if op == "<=":
        return value <= float(bound)
    if op == ">=":
        return value >= float(bound)
    raise ValueError(f"goal must read '<= x' or '>= x', got {goal!r}")


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def generic_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table with the goal and whether it was met."""
    has_loss = any("loss" in r for r in rows)
    head = ["case", *(["loss"] if has_loss else []), "metric", "value", "goal", "met", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = goal_met(r["value"], r["goal"])
        cells = [r["case"], *([r.get("loss", "")] if has_loss else []), r["metric"], _fmt(r["value"]),
                 r["goal"], "" if met is None else ("yes" if met else "**no**"), r["note"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def scaling_table(rows: list[dict[str, Any]]) -> str:
    """Scaling rows as two pivot tables (loss × N, loss × E), ms per step."""
    out = []
    for sweep, key in (("N", "n"), ("E", "num_edges")):
        sel = [r for r in rows if r["sweep"] == sweep]
        if not sel:
            continue
        xs = sorted({r[key] for r in sel})
        cell = {(r["loss"], r[key]): r["value"] for r in sel}
        out.append(f"{sel[0]['case']}, ms per step against {sweep}:\n")
        out.append("| loss | " + " | ".join(f"{sweep}={x}" for x in xs) + " |")
        out.append("|---|" + "---|" * len(xs))
        for loss in dict.fromkeys(r["loss"] for r in sel):
            out.append(f"| {loss} | " + " | ".join(f"{cell[(loss, x)]:.3g}" for x in xs) + " |")
        out.append("")
    return "\n".join(out)


def goals_table(rows: list[dict[str, Any]]) -> str:
    """Every row that carries a goal."""
    lines = ["| group | case | metric | measured | goal | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        met = goal_met(r["value"], r["goal"])
        if met is None:
            continue
        what = f"{r['case']}" + (f" {r['loss']}" if "loss" in r and r["group"] != "losses" else "")
        if r["group"] == "losses":
            what += f" {r['loss']}"
        lines.append(f"| {r['group']} | {what} | {r['metric']} | {r['value']:.4g} | {r['goal']} | "
                     f"{'yes' if met else '**no**'} |")
    return "\n".join(lines)


def to_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The whole report: machine, one table per group, then the goals."""
    gpu = f", GPU {meta['gpu']} (CUDA {meta['cuda']})" if "gpu" in meta else ""
    parts = [f"Machine: {meta['cpu']} ({meta['cpu_count']} cores, torch using {meta['torch_threads']} threads)"
             f"{gpu}; torch {meta['torch']}, Python {meta['python']}; device {meta['device']}; {meta['date']}; "
             f"load average at start {', '.join(f'{x:.1f}' for x in meta['load_average_start'])}"
             + (f", at end {', '.join(f'{x:.1f}' for x in meta['load_average_end'])}"
                if "load_average_end" in meta else "") + ".",
             f"Command: `{meta['command']}`"]
    if meta.get("quick"):
        parts.append("**--quick**: small sizes and few repeats, a smoke test. The goals are defined at the full "
                     "sizes, so the goal column here is informative only.")
    for group in GROUPS:
        sel = [r for r in rows if r["group"] == group]
        if not sel:
            continue
        parts.append(f"### {TITLES[group]}")
        if group == "losses":
            parts.append(bench_losses.to_markdown(sel))
        elif group == "scaling":
            parts.append(scaling_table(sel))
        else:
            parts.append(generic_table(sel))
    parts.append("### Goals")
    parts.append(goals_table(rows))
    return "\n\n".join(parts)


def _coherent(quick: bool, device: str, dtype: str, compile: bool) -> list[dict[str, Any]]:
    if quick:  # its quick mode alone takes ~35 s on the shared 2-core machine
        print("coherent: full runs only (run benchmarks/bench_coherent.py --quick on its own)", file=sys.stderr)
        return []
    if not (HERE / "bench_coherent.py").exists():
        raise FileNotFoundError(f"{HERE / 'bench_coherent.py'} is missing")
    import bench_coherent

    return list(bench_coherent.run(quick=quick, device=device, dtype=dtype, compile=compile))


def _hbce(quick: bool, device: str, dtype: str, compile: bool) -> list[dict[str, Any]]:
    if quick:  # bench_hbce's own quick mode times the full GO per-edge loop (~70 s here): sample it instead
        return bench_losses.per_edge_loop_rows(device=device, dtype=dtype)
    rows = bench_hbce.run(quick=False, device=device, dtype=dtype, compile=False)
    if compile:
        with bench_losses.fresh_dynamo():
            rows += bench_hbce.run(quick=False, device=device, dtype=dtype, compile=True)
    return rows


def _peers(quick: bool, device: str, dtype: str, compile: bool) -> list[dict[str, Any]]:
    import bench_peers

    return bench_peers.run(quick=quick, device=device, dtype=dtype, compile=compile)


RUNNERS: dict[str, Callable[[bool, str, str, bool], list[dict[str, Any]]]] = {
    "losses": lambda q, d, t, c: bench_losses.run(quick=q, device=d, dtype=t, compile=c, cases=CASES or None),
    "propagation": lambda q, d, t, c: bench_propagation.run(quick=q, device=d, dtype=t, compile=c),
    "hbce": _hbce,
    "dense": lambda q, d, t, c: bench_dense.run(quick=q, device=d, dtype=t),
    "coherent": _coherent,
    "memory": lambda q, d, t, c: bench_memory.run(quick=q, device=d, dtype=t),
    "penalties": lambda q, d, t, c: bench_penalties.run(quick=q),
    "scaling": lambda q, d, t, c: bench_scaling.run(quick=q, device=d, dtype=t),
    "hierarchy": lambda q, d, t, c: bench_hierarchy.run(quick=q, device=d),
    "peers": _peers,
}


def main(argv: list[str] | None = None) -> int:
    """Run the suite; returns the exit status (1 when any group failed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (CI smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(fullgraph=True)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--out", type=Path, help="write the rows and the machine description as JSON here")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {GROUPS}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, or 1 with --quick)")
    parser.add_argument("--plot-dir", type=Path, default=None,
                        help="where the scaling plots go (default: docs/img, or beside --out with --quick)")
    parser.add_argument("--cases", default="",
                        help="'losses' group only: comma-separated hierarchy:N cases, e.g. chexpert:4096,go:256")
    args = parser.parse_args(argv)
    try:
        CASES[:] = [(h, int(n)) for h, n in (c.strip().split(":") for c in args.cases.split(",") if c.strip())]
    except ValueError:
        parser.error(f"--cases must read hierarchy:N[,hierarchy:N...], got {args.cases!r}")
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; expected some of {GROUPS}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but torch.cuda.is_available() is False")
    threads = args.threads if args.threads is not None else (1 if args.quick else torch.get_num_threads())
    torch.set_num_threads(threads)
    meta = machine(args.device, threads)
    meta["quick"] = args.quick
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for group in groups:
        t0 = time.perf_counter()
        try:
            rows += RUNNERS[group](args.quick, args.device, args.dtype, args.compile)
        except Exception as exc:  # report every failing group, then fail
            errors.append({"group": group, "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()})
            print(f"FAILED {group}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"{group}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    meta["load_average_end"] = os.getloadavg()
    meta["elapsed_s"] = round(time.perf_counter() - start, 1)
    plot_dir = args.plot_dir
    if plot_dir is None:
        plot_dir = (args.out.parent if args.out else None) if args.quick else HERE.parent / "docs" / "img"
    if plot_dir is not None and any(r["group"] == "scaling" for r in rows):
        try:
            meta["plots"] = [str(p) for p in bench_scaling.plot(rows, plot_dir, f" — {meta['device']}, "
                                                                                f"torch {meta['torch']}")]
        except ImportError:
            print("matplotlib is not installed: scaling plots skipped", file=sys.stderr)
    print(to_markdown(rows, meta))
    print(f"\n({meta['elapsed_s']:.0f} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows, "errors": errors}, indent=1, default=str))
    if errors:
        for e in errors:
            print(f"\nFAILED group {e['group']}:\n{e['traceback']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
