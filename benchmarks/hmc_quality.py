"""AU(PRC) and hierarchy violations of each training loss on the HMC benchmarks, under C-HMCNN's protocol.

Protocol (Giunchiglia & Lukasiewicz, NeurIPS 2020, https://github.com/EGiunchiglia/C-HMCNN, ``main.py`` at
commit 2d1712644fcdb3d4156bf0ad643a9091bd482f87): MLP with 3 linear layers, ReLU, dropout 0.7; Adam with lr 1e-4
(FunCat / GO) or 1e-5 (enron, imclef07a, diatoms), weight decay 1e-5; batch size 4; hidden size and number of
epochs per dataset as in that file's ``hidden_dims_*`` and ``epochss_*`` (the table :data:`PROTOCOL` below);
the final model is trained on train + valid and scored once on test; AU(PRC) is the micro average precision over
all labels but the roots (the three Gene Ontology roots are left out, as C-HMCNN's ``to_skip`` does).

Differences from C-HMCNN's script, on purpose: features are mean-imputed and standardised with statistics of
train + valid only (C-HMCNN imputes each split, test included, with that split's own mean), and training uses
``BCEWithLogitsLoss`` on logits rather than ``BCELoss`` on sigmoid outputs (the same loss, numerically safer).

Each training loss (``--losses``: bce, hbce, hbce-hard, mcloss; also hbce-hinge, the probability hinge at λ = 1
that was the default before ``'logit_hinge'``; conditional, ``ConditionalBCELoss``; and conditional-ft, conditional
training whose last fifth of the epochs fine-tunes on the chain rule's marginals, ``ChainRuleBCELoss``) is trained
once per seed;
every model is scored on its raw outputs and again after ``hierloss.metrics.coherent`` (so ``bce`` yields the rows
"BCE" and "BCE + coherent"), except the two coherent by construction: MCLoss is scored on C-HMCNN's inference
output (``MaxConstraint``), conditional training (either form) on the chain rule's marginals (``ChainRule``).

Results are appended as JSON lines to ``--out`` (runs already there are skipped), so the table can be built up
over several runs and machines; ``--table`` prints the markdown table of everything in ``--out``::

    python benchmarks/hmc_quality.py --datasets eisen_FUN derisi_FUN --seeds 0 1 2
    python benchmarks/hmc_quality.py --datasets cellcycle_GO --device cuda --epochs 20   # labelled as reduced
    python benchmarks/hmc_quality.py --table
    python benchmarks/hmc_quality.py --by-seed "Conditional (chain rule)" --datasets eisen_FUN   # paired by seed
    python benchmarks/hmc_quality.py --by-seed "Conditional (chain rule)" "Conditional + fine-tuning (chain rule)"
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hierloss.datasets import load_hmc
from hmc_experiments import (
    DEFAULT_LOSSES,
    LOSSES,
    SKIPPED_LABELS,
    Result,
    TrainConfig,
    compare_losses,
    score,
    train_stacked,
)

HMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmc"
#: Every run's row, committed with the project so the table builds up across machines and sessions.
RESULTS = Path(__file__).resolve().parent / "results" / "hmc_quality.jsonl"

# dataset: (hidden size, epochs, learning rate), from C-HMCNN's main.py (see the module docstring).
PROTOCOL: dict[str, tuple[int, int, float]] = {
    "cellcycle_FUN": (500, 106, 1e-4),
    "derisi_FUN": (500, 67, 1e-4),
    "eisen_FUN": (500, 110, 1e-4),
    "gasch2_FUN": (500, 123, 1e-4),
    "spo_FUN": (250, 115, 1e-4),
    "cellcycle_GO": (1000, 62, 1e-4),
    "derisi_GO": (500, 91, 1e-4),
    "eisen_GO": (500, 123, 1e-4),
    "gasch2_GO": (500, 177, 1e-4),
    "spo_GO": (500, 103, 1e-4),
    "enron": (1000, 133, 1e-5),
    "imclef07a": (1000, 592, 1e-5),
    "diatoms": (2000, 474, 1e-5),
}

# Published test AU(PRC), mean of 10 runs (../shared/data/README.md): C-HMCNN, and HMCN-F (Wehrmann et al., 2018).
PUBLISHED: dict[str, tuple[float, float]] = {
    "cellcycle_FUN": (0.255, 0.252), "derisi_FUN": (0.195, 0.193), "eisen_FUN": (0.306, 0.298),
    "gasch2_FUN": (0.258, 0.254), "spo_FUN": (0.215, 0.211), "cellcycle_GO": (0.413, 0.400),
    "derisi_GO": (0.370, 0.369), "eisen_GO": (0.455, 0.440), "gasch2_GO": (0.414, 0.465),
    "spo_GO": (0.382, 0.376), "enron": (0.756, 0.724), "imclef07a": (0.956, 0.950), "diatoms": (0.758, 0.530),
}

ROW_ORDER = ["BCE", "BCE + coherent", "HBCE", "HBCE + coherent", "HBCE hinge λ=1", "HBCE hinge λ=1 + coherent",
             "HBCE hard", "HBCE hard + coherent", "MCLoss", "Conditional (chain rule)",
             "Conditional + fine-tuning (chain rule)"]
#: What ``--by-seed`` compares each method with.
BASELINES = ("BCE + coherent", "MCLoss")


def machine(device: str) -> str:
    """A short description of where the run happens."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} thread(s)), torch {torch.__version__}"


def done_runs(path: Path) -> set[tuple[str, str, int, int]]:
    """(dataset, loss, seed, epochs) of the runs already in the results file."""
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["loss"], r["seed"], r["epochs"]) for r in rows}


def _append(out: Path, row: dict[str, Any]) -> None:
    """Append one run's row to the results file (and echo it)."""
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def run(args: argparse.Namespace) -> None:
    """Train and score every (dataset, seed, loss) not yet in ``args.out``."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    where = args.where or machine(args.device)
    done = done_runs(args.out)
    for dataset in args.datasets:
        hidden, full_epochs, lr = PROTOCOL[dataset]
        epochs = args.epochs or full_epochs
        todo = [(loss, seed) for seed in args.seeds for loss in args.losses
                if (dataset, loss, seed, epochs) not in done]
        if not todo:
            continue
        splits = load_hmc(HMC / dataset, merge_valid=True)
        config = TrainConfig(hidden=hidden, lr=lr, epochs=epochs, device=args.device)
        base = {"dataset": dataset, "full_protocol": epochs == full_epochs, "hidden": hidden, "lr": lr,
                "batch_size": config.batch_size, "date": datetime.date.today().isoformat()}
        if args.stack:
            graph = ", CUDA graph" if torch.device(args.device).type == "cuda" else ""
            extra = {"where": f"{where}; {len(todo)} networks stacked{graph}"}
            trained = train_stacked(todo, splits.train.X, splits.train.Y, splits.hierarchy, config, args.progress)
            for (_, seed), model in zip(todo, trained):
                for result in score(model, splits.test.X, splits.test.Y):
                    _append(args.out, {**base, "seed": seed, **result.to_dict(), **extra})
            continue
        for seed in args.seeds:
            losses = [loss for loss, s in todo if s == seed]
            if not losses:
                continue
            row = {**base, "seed": seed}
            compare_losses(splits.train.X, splits.train.Y, splits.test.X, splits.test.Y, splits.hierarchy,
                           losses=losses, config=replace(config, seed=seed), progress=args.progress,
                           on_result=lambda r, row=row: _append(args.out, {**row, **r.to_dict(), "where": where}),
                           skipped_labels=SKIPPED_LABELS)


def _mean_std(values: list[float], digits: int = 3, percent: bool = False) -> str:
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    unit = "%" if percent else ""
    if len(values) < 2:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}{unit}"


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the results: mean ± std over seeds, published AU(PRC) beside ours."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        name = _name(r)
        groups[(r["dataset"], name, r["epochs"])].append(r)
    order = {d: i for i, d in enumerate(PROTOCOL)}
    keys = sorted(groups, key=lambda k: (order.get(k[0], 99), -k[2], ROW_ORDER.index(k[1])
                                         if k[1] in ROW_ORDER else 99))
    lines = ["| dataset | epochs | method | seeds | AU(PRC) | C-HMCNN | HMCN-F | violations @0.5 | violations any "
             "threshold | hF1 @0.5 | train s / run | ran on |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, name, epochs in keys:
        g = groups[(dataset, name, epochs)]
        full = PROTOCOL.get(dataset, (0, 0, 0.0))[1]
        epoch_text = f"{epochs}" if epochs == full else f"{epochs} (reduced; protocol {full})"
        chmcnn, hmcnf = PUBLISHED.get(dataset, (float("nan"), float("nan")))
        seeds = ",".join(str(s) for s in sorted({r["seed"] for r in g}))
        where = "; ".join(sorted({r["where"] for r in g}))
        lines.append(
            f"| {dataset} | {epoch_text} | {name} | {seeds} | {_mean_std([r['auprc'] for r in g])} | {chmcnn:.3f} | "
            f"{hmcnf:.3f} | {_mean_std([r['violation_05'] for r in g], 1, True)} | "
            f"{_mean_std([r['violation_any'] for r in g], 1, True)} | {_mean_std([r['hf1'] for r in g])} | "
            f"{statistics.fmean(r['train_s'] for r in g):.0f} | {where} |")
    return "\n".join(lines)


def _name(row: dict[str, Any]) -> str:
    return Result(loss=row["loss"], output=row["output"], auprc=0, auroc=0, violation_05=0, violation_any=0, hf1=0,
                  train_s=0, epochs=0).name


def by_seed(rows: list[dict[str, Any]], methods: list[str] | str, baselines: tuple[str, ...] = BASELINES) -> str:
    """A markdown table pairing each of ``methods`` with each baseline seed by seed (same dataset, seed and epochs: the
    same initial weights and batches), with the difference in AU(PRC); then, per dataset and overall, the mean
    difference and on how many seeds the method is higher."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    index = {(r["dataset"], r["epochs"], r["seed"], _name(r)): r for r in rows}
    order = {d: i for i, d in enumerate(PROTOCOL)}
    keys = sorted({k[:3] for k in index if k[3] in methods}, key=lambda k: (order.get(k[0], 99), -k[1], k[2]))
    header = ["dataset", "epochs", "seed", *(f"{b}: AU(PRC) / hF1" for b in baselines)]
    for m in methods:
        header += [f"{m}: AU(PRC) / hF1 / violations any", *(f"Δ vs {b}" for b in baselines)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    deltas: dict[tuple[str, str, int, str], list[float]] = defaultdict(list)
    for dataset, epochs, seed in keys:
        base = [index.get((dataset, epochs, seed, b)) for b in baselines]
        cells = [dataset, str(epochs), str(seed)]
        cells += ["—" if r is None else f"{r['auprc']:.4f} / {r['hf1']:.4f}" for r in base]
        for m in methods:
            r = index.get((dataset, epochs, seed, m))
            if r is None:
                cells += ["—"] * (1 + len(baselines))
                continue
            cells.append(f"{r['auprc']:.4f} / {r['hf1']:.4f} / {100 * r['violation_any']:.1f}%")
            for b, other in zip(baselines, base):
                if other is None:
                    cells.append("—")
                    continue
                delta = r["auprc"] - other["auprc"]
                deltas[(m, dataset, epochs, b)].append(delta)
                cells.append(f"{delta:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m in methods:
        for b in baselines:
            mine = {k: v for k, v in deltas.items() if k[0] == m and k[3] == b}
            for (_, dataset, epochs, _), d in sorted(mine.items(), key=lambda kv: order.get(kv[0][1], 99)):
                lines.append(f"- {m} vs {b}, {dataset} ({epochs} epochs): mean Δ AU(PRC) {statistics.fmean(d):+.4f}, "
                             f"higher on {sum(x > 0 for x in d)} of {len(d)} seeds")
            every = [x for d in mine.values() for x in d]
            if every:
                above = sum(statistics.fmean(d) > 0 for d in mine.values())
                lines.append(f"- **{m} vs {b}, all pairs: mean Δ AU(PRC) {statistics.fmean(every):+.4f}, higher on "
                             f"{sum(x > 0 for x in every)} of {len(every)} seeds; mean Δ above 0 on {above} of "
                             f"{len(mine)} datasets**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(PROTOCOL), choices=list(PROTOCOL), metavar="NAME")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES), choices=list(LOSSES),
                        help="training losses; each model but MCLoss's is also scored after `coherent`")
    parser.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs (labelled reduced)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--where", default=None, help="machine description stored with each row (default: detected)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results file (default: benchmarks/results/hmc_quality.jsonl)")
    parser.add_argument("--stack", action="store_true",
                        help="train all of a dataset's runs at once as one stacked model (hierloss.experiments."
                             "train_stacked; CUDA graphs on a GPU)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar per run")
    parser.add_argument("--by-seed", nargs="+", default=None, metavar="METHOD",
                        help="only print each METHOD (a table row name, e.g. 'Conditional (chain rule)') against "
                             f"{' and '.join(BASELINES)}, seed by seed, from --out")
    parser.add_argument("--table", action="store_true",
                        help="only print the markdown table of --out (of the --datasets given, default all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.table or args.by_seed):
        if not HMC.is_dir():
            print(f"HMC datasets not found at {HMC}", file=sys.stderr)
            return 2
        start = time.perf_counter()
        run(args)
        print(f"wall time: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if not args.out.exists():
        print(f"no results file {args.out}", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["dataset"] in args.datasets]
    print(by_seed(rows, args.by_seed) if args.by_seed else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
