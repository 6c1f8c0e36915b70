"""Forward+backward time of every hierloss loss relative to ``BCEWithLogitsLoss`` on the same ``(N, C)`` input.

The losses are the training criteria of ``hierloss.recipes`` (each once), plus BCE through two layers
(``MaxConstraint``, ``LabelGraphRefinement``) as separate timing cases.

Sizes: CheXpert (21 labels, 20 edges; N = 16, 256, 4096) and cellcycle_GO (4,125 labels, 5,824 edges; N = 64,
256), eager and (with ``--compile``) ``torch.compile(fullgraph=True)``. Losses are timed round-robin (one
sample of each per round), so slow drifts in machine load hit every loss alike and the ratios stay fair.

Run: ``python benchmarks/bench_losses.py [--quick] [--device cuda] [--compile] [--dtype bf16]``
(the suite runner ``benchmarks/run.py`` calls :func:`run`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hierloss
from _hierarchies import benchmark_hierarchy
from _timing import median_seconds_interleaved
from hierloss import Hierarchy

__all__ = ["DTYPES", "LOSSES", "MissingLossError", "bce_on_probs", "fresh_dynamo", "inputs", "loss_fn", "make_step",
           "per_edge_loop_rows", "run"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

LossFn = Callable[[Tensor, Tensor], Tensor]


class MissingLossError(RuntimeError):
    """A loss the suite benchmarks is not exported by ``hierloss``."""


def _cls(name: str) -> Any:
    try:
        return getattr(hierloss, name)
    except AttributeError:
        raise MissingLossError(f"hierloss has no {name!r}: the benchmark suite times every loss in "
                               f"bench_losses.LOSSES, so either export it or remove it from that list") from None


def _bce_head(layer: nn.Module) -> LossFn:
    bce = nn.BCEWithLogitsLoss()
    return lambda x, y: bce(layer(x), y)


def bce_on_probs(probs: Tensor, target: Tensor) -> Tensor:
    """``binary_cross_entropy`` in at least float32, autocast off (autocast refuses it as unsafe in low precision)."""
    dtype = torch.promote_types(probs.dtype, torch.float32)
    with torch.autocast(probs.device.type, enabled=False):
        return F.binary_cross_entropy(probs.to(dtype), target.to(dtype))


def _max_constraint_head(layer: nn.Module) -> LossFn:
    return lambda x, y: bce_on_probs(layer(torch.sigmoid(x)), y)


Builder = Callable[[Hierarchy], tuple[LossFn, list[nn.Module]]]


def _recipe_stage(recipe: str, stage: int) -> Builder:
    def build(h: Hierarchy) -> tuple[LossFn, list[nn.Module]]:
        criterion = hierloss.recipes.get(recipe, h).stages[stage]
        return criterion, [criterion]

    return build


def _recipe_cases() -> dict[str, tuple[str, Builder]]:
    """Every training criterion of ``hierloss.recipes`` once, named after its loss (the last class its code names:
    ``HierarchyPenalty`` for ``BCEWithLogitsLoss() + HierarchyPenalty(h)``), the first recipe naming it kept:
    ``HBCELoss`` in its default mode (``bench_hbce.py`` times the others), ``ChainRuleBCELoss`` as
    ``conditional-ft``'s fine-tuning stage."""
    cases: dict[str, tuple[str, Builder]] = {}
    for name in hierloss.recipes.names():
        for index, stage in enumerate(hierloss.recipes.spec(name).stages):
            row = re.findall(r"(\w+)\(", stage.criterion)[-1]
            where = f", stage {index}" if len(hierloss.recipes.spec(name).stages) > 1 else ""
            cases.setdefault(row, (f"{stage.criterion}: recipe {name!r}{where}", _recipe_stage(name, index)))
    return cases


# name -> (what is timed, builder(hierarchy) -> loss(logits, target) plus the modules to move to the device): every
# training criterion of hierloss.recipes, then two timing cases that are not a recipe's criterion: BCE through
# each of two layers.
LOSSES: dict[str, tuple[str, Builder]] = {
    **_recipe_cases(),
    "MaxConstraint": ("binary_cross_entropy(MaxConstraint(h)(sigmoid(logits)), target), a layer, not a recipe's "
                      "criterion", lambda h: (_max_constraint_head(m := _cls("MaxConstraint")(h)), [m])),
    "LabelGraphRefinement": ("BCEWithLogits(LabelGraphRefinement(C, h)(logits), target), a layer, not a recipe's "
                             "criterion",
                             lambda h: (_bce_head(m := _cls("LabelGraphRefinement")(h.num_labels, h)), [m])),
}


def loss_fn(name: str, hierarchy: Hierarchy, device: str | torch.device = "cpu") -> LossFn:
    """The loss ``name`` of :data:`LOSSES` built for ``hierarchy``, its modules moved to ``device``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    fn, modules = LOSSES[name][1](hierarchy)
    for module in modules:
        module.to(device)
    return fn


def inputs(hierarchy: Hierarchy, n: int, device: str | torch.device, dtype: str,
           seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random logits (requiring grad) and ancestor-closed 0/1 targets, both ``(n, C)`` in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    c = hierarchy.num_labels
    x = torch.randn(n, c, generator=gen).to(device=device, dtype=DTYPES[dtype]).requires_grad_()
    y = hierarchy.propagate((torch.rand(n, c, generator=gen) < 0.05).float()).to(device=device, dtype=DTYPES[dtype])
    return x, y


def _autocast(device: str | torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[dtype])


def make_step(fn: LossFn, x: Tensor, y: Tensor, *, device: str | torch.device = "cpu", dtype: str = "fp32",
              compile: bool = False) -> Callable[[], None]:
    """One training-style step: ``fn(x, y).backward()``, under ``torch.autocast`` for bf16/fp16.

    With ``compile=True`` the loss call is wrapped in ``torch.compile(fullgraph=True)`` (a graph break is an
    error, as the library promises none).
    """
    call: Callable[[Tensor], Tensor] = lambda z: fn(z, y)  # noqa: E731
    if compile:
        call = torch.compile(call, fullgraph=True)

    def step() -> None:
        x.grad = None
        with _autocast(device, dtype):
            loss = call(x)
        loss.backward()

    return step


def _goal(loss: str, hierarchy: str, n: int, device: str, compiled: bool) -> str:
    """Issue goals for HBCELoss: ≤2× BCE (CheXpert, N=4096) and ≤4× (GO, N=256) on CPU eager; ≤1.3× GPU compiled."""
    if loss != "HBCELoss" or (hierarchy, n) not in {("CheXpert", 4096), ("cellcycle_GO", 256),
                                                    ("GO-size synthetic", 256)}:
        return ""
    if torch.device(device).type == "cpu" and not compiled:
        return "<= 2.0" if hierarchy == "CheXpert" else "<= 4.0"
    if torch.device(device).type == "cuda" and compiled:
        return "<= 1.3"
    return ""


def sizes(quick: bool) -> list[tuple[str, int]]:
    """(hierarchy, N) cases: the issue's sizes, or small ones for ``--quick``."""
    if quick:
        return [("chexpert", 16), ("chexpert", 256), ("go", 64)]
    return [("chexpert", 16), ("chexpert", 256), ("chexpert", 4096), ("go", 64), ("go", 256)]


@contextlib.contextmanager
def fresh_dynamo() -> Iterator[None]:
    """Each case compiles afresh, with room for every loss: the steps share one code object (the lambda in
    :func:`make_step`), so dynamo's per-code recompile limit (8) would otherwise stop a fullgraph compile."""
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    torch._dynamo.reset()
    try:
        with config.patch({limit: 64}):
            yield
    finally:
        torch._dynamo.reset()


def run(*, quick: bool = False, device: str = "cpu", dtype: str = "fp32", compile: bool = False,
        losses: list[str] | None = None, cases: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Rows for the suite runner: each loss's time ratio to BCEWithLogitsLoss, eager (and compiled).

    ``cases`` ((hierarchy, N) pairs, e.g. ``[("go", 256)]``) replaces :func:`sizes`.

    Raises :class:`MissingLossError` when a loss of :data:`LOSSES` is not exported by hierloss.
    """
    names = list(LOSSES) if losses is None else ["BCEWithLogitsLoss", *[k for k in losses if k != "BCEWithLogitsLoss"]]
    warmup, repeat, min_time = (1, 3, 0.002) if quick else (2, 9, 0.05)
    rows: list[dict[str, Any]] = []
    for hname, n in sizes(quick) if cases is None else cases:
        h, label = benchmark_hierarchy(hname)
        x, y = inputs(h, n, device, dtype)
        fns = {name: loss_fn(name, h, device) for name in names}
        for compiled in (False, True) if compile else (False,):
            with fresh_dynamo() if compiled else contextlib.nullcontext():
                steps = {name: make_step(fn, x, y, device=device, dtype=dtype, compile=compiled)
                         for name, fn in fns.items()}
                times = median_seconds_interleaved(steps, device=device, warmup=warmup, repeat=repeat,
                                                   min_time=min_time)
            mode = "compiled" if compiled else "eager"
            case = f"{label} N={n} C={h.num_labels} E={h.num_edges} {dtype} {mode}"
            base = times["BCEWithLogitsLoss"]
            for name in names:
                rows.append({
                    "group": "losses", "case": case, "loss": name, "hierarchy": label, "n": n, "mode": mode,
                    "dtype": dtype, "seconds": times[name],
                    "metric": "bce_median_ms" if name == "BCEWithLogitsLoss" else "time_ratio_vs_bce",
                    "value": base * 1e3 if name == "BCEWithLogitsLoss" else times[name] / base,
                    "goal": _goal(name, label, n, device, compiled),
                    "note": f"{name}: {times[name] * 1e3:.3f} ms ({LOSSES[name][0]})",
                })
    return rows


def per_edge_loop_rows(*, device: str = "cpu", dtype: str = "fp32", n: int = 64,
                       sample: tuple[int, int] = (25, 50)) -> list[dict[str, Any]]:
    """HBCELoss (hinge) against the per-edge Python loop at GO size, the loop timed on two edge samples.

    The loop costs ``a + b·k`` for ``k`` edges, so its time on all ``E`` edges is extrapolated from the two
    samples; this keeps ``--quick`` short (the whole loop takes ~20 s per step here). Full runs time the whole loop
    in ``bench_hbce.py``.
    """
    from bench_hbce import per_edge_loop_loss

    h, label = benchmark_hierarchy("go")
    x, y = inputs(h, n, device, dtype)
    hbce = _cls("HBCELoss")(h, mode="hinge").to(device)
    edges = list(h.edge_indices)
    steps: dict[str, Callable[[], None]] = {"hbce": make_step(hbce, x, y, device=device, dtype=dtype)}
    for k in sample:
        steps[f"loop{k}"] = make_step(lambda z, t, k=k: per_edge_loop_loss(z, t, edges[:k], [1.0] * k), x, y,
                                      device=device, dtype=dtype)
    times = median_seconds_interleaved(steps, device=device, warmup=1, repeat=3)
    k1, k2 = sample
    slope = (times[f"loop{k2}"] - times[f"loop{k1}"]) / (k2 - k1)
    loop = times[f"loop{k1}"] + slope * (h.num_edges - k1)
    return [{"group": "hbce", "case": f"{label} N={n} C={h.num_labels} E={h.num_edges} {dtype} eager mode=hinge",
             "metric": "speedup_vs_per_edge_loop", "value": loop / times["hbce"], "goal": ">= 10",
             "note": f"loop ≈ {loop * 1e3:.0f} ms (timed on {k1} and {k2} edges, extrapolated linearly to "
                     f"{h.num_edges}), HBCELoss {times['hbce'] * 1e3:.2f} ms"}]


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Loss rows as one table: a row per loss, a column per case (time relative to BCEWithLogitsLoss)."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    cell = {(r["loss"], r["case"]): r for r in rows}
    lines = ["| loss | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    for loss in losses:
        values = []
        for case in cases:
            r = cell.get((loss, case))
            if r is None:
                values.append("")
            elif r["metric"] == "bce_median_ms":
                values.append(f"{r['value']:.3g} ms")
            else:
                goal = f" (goal {r['goal'].replace('<=', '≤')}×)" if r["goal"] else ""
                values.append(f"{r['value']:.2f}×{goal}")
        lines.append(f"| {loss} | " + " | ".join(values) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    print(to_markdown(run(quick=args.quick, device=args.device, dtype=args.dtype, compile=args.compile)))
    print(f"\n({time.perf_counter() - start:.0f} s)")
