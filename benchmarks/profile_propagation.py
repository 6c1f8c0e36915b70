"""Where the propagation engine's time goes: ``torch.profiler`` self time of each operation, per engine function.

For MaxConstraint then BCE, ``MCLoss``, ``ChainRuleBCELoss`` and ``coherent`` (one thread, eager, forward +
backward, cellcycle_GO N = 256 by default), every function of :mod:`hierloss.propagation._kernels` runs inside a
``record_function`` range named after it (patched in this process only), and the self CPU time of each PyTorch
operation goes to the innermost range around it. Time outside every range is split into BCE's own operations
(``binary_cross_entropy_with_logits``, its backward and the operations they call) and the rest (the loss's other
element-wise work, the reduction, autograd). Shares are of the summed self time of the profiled steps.

Run: ``python benchmarks/profile_propagation.py [--case go|chexpert] [--n N] [--steps 20] [--out rows.json]``.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hierloss.propagation._kernels as K
from _hierarchies import benchmark_hierarchy
from _timing import machine
from bench_losses import inputs
from bench_propagation import operations

__all__ = ["profile_shares", "run"]

PREFIX = "engine: "
BCE_OPS = ("aten::binary_cross_entropy_with_logits", "BinaryCrossEntropyWithLogitsBackward0",
           "aten::binary_cross_entropy_with_logits_backward")


def _instrument() -> Callable[[], None]:
    """Wrap every function of the engine's kernels module in a range named after it; returns the undo."""
    originals: dict[str, Any] = {}
    for name, fn in inspect.getmembers(K, inspect.isfunction):
        if fn.__module__ != K.__name__:
            continue

        @functools.wraps(fn)
        def wrapped(*args: Any, _fn: Any = fn, _name: str = name, **kwargs: Any) -> Any:
            with record_function(PREFIX + _name):
                return _fn(*args, **kwargs)

        originals[name] = fn
        setattr(K, name, wrapped)

    def undo() -> None:
        for name, fn in originals.items():
            setattr(K, name, fn)

    return undo


def _owner(event: Any) -> str:
    """The innermost engine range around an operation, or where its time counts outside the engine."""
    node, bce = event, False
    while node is not None:
        if node.name.startswith(PREFIX):
            return node.name[len(PREFIX):]
        bce = bce or any(key in node.name for key in BCE_OPS)
        node = node.cpu_parent
    if bce:
        return "BCE (torch's own operations)"
    return "outside the engine (element-wise work, reduction, autograd)"


def profile_shares(fn: Callable[[Tensor], Tensor | None], x: Tensor, steps: int) -> dict[str, float]:
    """Share of the summed self CPU time of ``steps`` forward (+ backward) steps, per owner."""
    def step() -> None:
        x.grad = None
        out = fn(x)
        if out is not None and out.requires_grad:
            out.backward()

    for _ in range(3):
        step()
    undo = _instrument()
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
    finally:
        undo()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.profiler.function_events:
        if event.name.startswith(PREFIX) or event.name.startswith("ProfilerStep"):
            continue
        totals[_owner(event)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {owner: value / whole for owner, value in sorted(totals.items(), key=lambda kv: -kv[1])}


def run(case: str = "go", n: int = 256, steps: int = 20) -> list[dict[str, Any]]:
    """One row per (operation, owner): the owner's share of the step's self time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        h, label = benchmark_hierarchy(case)
        x, y = inputs(h, n, "cpu", "fp32")
        rows: list[dict[str, Any]] = []
        for name, fn in operations(h, y.detach()).items():
            if name == "BCEWithLogitsLoss":
                continue
            if "no grad" in name:
                with torch.no_grad():
                    shares = profile_shares(fn, x, steps)
            else:
                shares = profile_shares(fn, x, steps)
            for owner, share in shares.items():
                rows.append({"group": "profile", "case": f"{label} N={n} C={h.num_labels} fp32 eager",
                             "loss": name, "metric": "share_of_self_time", "value": share, "goal": "",
                             "note": owner})
        return rows
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="go", choices=["go", "chexpert"])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.case, args.n, args.steps)
    for row in result:
        print(f"{row['loss']:<22} {row['value']:6.1%}  {row['note']}")
    if args.out:
        args.out.write_text(json.dumps({"meta": {"machine": machine("cpu", 1), "torch": torch.__version__},
                                        "rows": result}, indent=1) + "\n")
