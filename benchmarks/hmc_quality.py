"""AU(PRC) and hierarchy violations of each recipe on HMC datasets, under C-HMCNN's protocol or settings you give.

Protocol (Giunchiglia & Lukasiewicz, NeurIPS 2020, https://github.com/EGiunchiglia/C-HMCNN, ``main.py`` at
commit 2d1712644fcdb3d4156bf0ad643a9091bd482f87): MLP with 3 linear layers, ReLU, dropout 0.7; Adam with lr 1e-4
(FunCat / GO) or 1e-5 (enron, imclef07a, diatoms), weight decay 1e-5; batch size 4; hidden size and number of
epochs per dataset as in that file's ``hidden_dims_*`` and ``epochss_*`` (the table :data:`PROTOCOL` below);
the final model is trained on train + valid and scored once on test; AU(PRC) is the micro average precision over
all labels but the roots (the three Gene Ontology roots are left out, as C-HMCNN's ``to_skip`` does).

Differences from C-HMCNN's script, on purpose: features are mean-imputed and standardised with statistics of
train + valid only (C-HMCNN imputes each split, test included, with that split's own mean), and training uses
``BCEWithLogitsLoss`` on logits rather than ``BCELoss`` on sigmoid outputs (the same loss, numerically safer).

Each recipe of ``--losses`` (``hierloss.recipes``: bce, hbce, hbce-hard, mcloss by default; also hbce-hinge,
bce+penalty, conditional, conditional-ft, asl, focal, zlpr, msml) is trained once per seed and scored through its
head, and again after ``hierloss.metrics.coherent`` when that head is the plain sigmoid (so ``bce`` yields the rows
"BCE" and "BCE + coherent"); MCLoss is scored on C-HMCNN's inference output (``MaxConstraint``), conditional
training (either form) on the chain rule's marginals (``ChainRule``).

Your own data: ``--data DIR`` is the folder that holds one folder (or file prefix) per dataset, ``--datasets`` their
names. A dataset outside the protocol table needs ``--hidden``, ``--lr`` and ``--epochs``; any of them (and
``--batch-size``, ``--weight-decay``, ``--dropout``) overrides the protocol for every dataset of the call. A run is
"full protocol" only when its data are the protocol's files and every setting is the protocol's.

Results are appended as JSON lines to ``--out`` (default ``hmc_quality.jsonl`` in the current folder; the project's
own table is ``benchmarks/results/hmc_quality.jsonl``, passed explicitly). A run already in ``--out`` is skipped, with
a line saying so: a run is the same when its dataset's files (a SHA-256 of their content), its recipe, its seed and
every setting (epochs, hidden, lr, batch size, weight decay, dropout, layers, the fine-tuning epochs) are the same.
Where it ran (machine, threads, torch version, ``--stack``) is recorded in the row's ``where`` but is not part of
that key: a seed reproduces a run exactly on one machine, another CPU drifts by a few ten-thousandths of AU(PRC),
and a stacked run is another draw of the same training. ``--table`` and ``--by-seed`` group rows by dataset, data
and settings, never averaging runs with different ones::

    python benchmarks/hmc_quality.py --datasets eisen_FUN derisi_FUN --seeds 0 1 2 --out runs.jsonl
    python benchmarks/hmc_quality.py --datasets cellcycle_GO --device cuda --epochs 20 --out runs.jsonl   # reduced
    python benchmarks/hmc_quality.py --data ~/hmc --datasets mydata_FUN --hidden 500 --lr 1e-4 --epochs 100 \\
        --out runs.jsonl
    python benchmarks/hmc_quality.py --table --out benchmarks/results/hmc_quality.jsonl
    python benchmarks/hmc_quality.py --by-seed "Conditional + fine-tuning (chain rule)" --datasets eisen_FUN \\
        --out benchmarks/results/hmc_quality.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import math
import platform
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hierloss import recipes
from hierloss.datasets import load_hmc
from hmc_experiments import DEFAULT_LOSSES, TRAININGS, TrainConfig, compare_losses, recipe_of, score, train_stacked

#: Where the project keeps the HMC datasets (``--data``'s default).
HMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmc"
#: The project's own table, committed so that it builds up across machines and sessions (pass it as ``--out``).
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
#: The protocol's settings shared by every dataset: C-HMCNN's (``TrainConfig``'s defaults).
COMMON: dict[str, Any] = {"batch_size": TrainConfig.batch_size, "weight_decay": TrainConfig.weight_decay,
                          "dropout": TrainConfig.dropout, "num_layers": TrainConfig.num_layers}
#: The settings that define a run besides its data, recipe and seed, in the order the tables show them.
SETTINGS: tuple[str, ...] = ("epochs", "hidden", "lr", *COMMON)
#: :func:`data_fingerprint` of each protocol dataset as redistributed with C-HMCNN (the project's ``../shared``
#: copy): the rows in the project's results file, which predate the fingerprint, were made from these files.
FINGERPRINTS: dict[str, str] = {
    "cellcycle_FUN": "bcff810d9f181581", "derisi_FUN": "9365a9bcc29a167b", "eisen_FUN": "9a0c85fddbfc81bd",
    "gasch2_FUN": "d552dcd24b609e27", "spo_FUN": "5820f6acc005953e", "cellcycle_GO": "c8f2d05e5befa756",
    "derisi_GO": "1dba154831a55ada", "eisen_GO": "1f70bee38e17d79e", "gasch2_GO": "59b6f6c8a8bc0eac",
    "spo_GO": "57c99a2955e03522", "enron": "b72e038ff4768193", "imclef07a": "dc81cf772f7fb81f",
    "diatoms": "3b20ee8a15b006e5",
}

# Published test AU(PRC), mean of 10 runs (../shared/data/README.md): C-HMCNN, and HMCN-F (Wehrmann et al., 2018).
PUBLISHED: dict[str, tuple[float, float]] = {
    "cellcycle_FUN": (0.255, 0.252), "derisi_FUN": (0.195, 0.193), "eisen_FUN": (0.306, 0.298),
    "gasch2_FUN": (0.258, 0.254), "spo_FUN": (0.215, 0.211), "cellcycle_GO": (0.413, 0.400),
    "derisi_GO": (0.370, 0.369), "eisen_GO": (0.455, 0.440), "gasch2_GO": (0.414, 0.465),
    "spo_GO": (0.382, 0.376), "enron": (0.756, 0.724), "imclef07a": (0.956, 0.950), "diatoms": (0.758, 0.530),
}

#: What ``--by-seed`` compares each method with: the titles of recipes ``bce+coherent`` and ``mcloss``.
BASELINES = (recipes.spec("bce+coherent").title, recipes.spec("mcloss").title)


class UsageError(Exception):
    """A mistake in the arguments, found before any training: printed as one line, exit code 2."""


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


def data_fingerprint(path: Path) -> str:
    """The first 16 hex digits of a SHA-256 over one dataset's ARFF files (``path`` a folder or a file prefix, as
    ``load_hmc`` takes): for each file, in order of its split word (``train``, ``valid``, ``test``,
    ``trainvalid``, ...), that word and the file's bytes, decompressed when gzip'd. A copy of the same files, under
    another folder or name, has the same fingerprint.

    Raises:
        UsageError: no ARFF file is there.
    """
    directory, prefix = (path, "") if path.is_dir() else (path.parent, path.name.lower())
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.name.lower().startswith(prefix)
                   and f.name.lower().endswith((".arff", ".arff.gz"))) if directory.is_dir() else []
    if not files:
        raise UsageError(f"no HMC dataset at {path}: expected a folder (or path prefix) of .arff files")
    parts = []
    for file in files:
        stem = re.sub(r"\.arff(\.gz)?$", "", file.name.lower())
        content = file.read_bytes()
        parts.append((re.split(r"[._]", stem)[-1], gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content))
    digest = hashlib.sha256()
    for word, content in sorted(parts):
        digest.update(word.encode() + b"\0" + len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()[:16]


def protocol_settings(dataset: str) -> dict[str, Any] | None:
    """The protocol's settings of ``dataset`` (every name of :data:`SETTINGS`), ``None`` outside :data:`PROTOCOL`."""
    if dataset not in PROTOCOL:
        return None
    hidden, epochs, lr = PROTOCOL[dataset]
    return {"epochs": epochs, "hidden": hidden, "lr": lr, **COMMON}


def resolve_settings(dataset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run on ``dataset``: the protocol's, each replaced by the one ``given`` (``None``: not
    given). Outside the protocol table, ``epochs``, ``hidden`` and ``lr`` must be given; the others default to
    C-HMCNN's.

    Raises:
        UsageError: naming the dataset and the settings it lacks.
    """
    base = protocol_settings(dataset)
    if base is None:
        missing = [f"--{name}" for name in ("hidden", "lr", "epochs") if given.get(name) is None]
        if missing:
            raise UsageError(f"dataset {dataset!r} is not in the protocol table ({', '.join(PROTOCOL)}): give "
                             f"{', '.join(missing)}")
        base = dict(COMMON)
    return {name: given[name] if given.get(name) is not None else base[name] for name in SETTINGS}


def with_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """A results row with every key the run key needs: rows written before a setting was recorded get the
    protocol's value (and the protocol's data fingerprint) for it."""
    base = protocol_settings(row["dataset"]) or COMMON
    filled = {name: base.get(name) for name in SETTINGS if name not in row}
    if "data_sha256" not in row:
        filled["data_sha256"] = FINGERPRINTS.get(row["dataset"])
    return {**row, **filled, "fine_tune_epochs": row.get("fine_tune_epochs")}


def setting_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two rows comparable: dataset, data fingerprint and every setting (``row`` with defaults)."""
    return (row["dataset"], row["data_sha256"], *(row[name] for name in SETTINGS))


def run_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a run the same run: :func:`setting_key`, the recipe, the seed and the fine-tuning epochs."""
    return (*setting_key(row), row["loss"], row["seed"], row["fine_tune_epochs"])


def is_full_protocol(dataset: str, data: str | None, settings: dict[str, Any]) -> bool:
    """Whether a run on ``dataset`` is C-HMCNN's protocol: its files and every setting."""
    return data is not None and data == FINGERPRINTS.get(dataset) and settings == protocol_settings(dataset)


def describe(key: tuple[Any, ...], long: bool = True) -> str:
    """A :func:`setting_key` in words: the epochs, then each setting that differs from the protocol's (all of them
    outside the protocol table), and the data fingerprint when it is not the protocol's files.

    ``long``: the table's cell (``'110'``, ``'1 (reduced; protocol 110)'``); otherwise a summary's
    (``'110 epochs'``).
    """
    dataset, data, *values = key
    settings = dict(zip(SETTINGS, values))
    base = protocol_settings(dataset)
    epochs = settings["epochs"]
    if not long or base is None or epochs == base["epochs"]:
        text = f"{epochs}" if long else f"{epochs} epochs"
    else:
        text = f"{epochs} ({'reduced; ' if epochs < base['epochs'] else ''}protocol {base['epochs']})"
    others = [f"{name.replace('_', ' ')} {settings[name]:g}" + (f" (protocol {base[name]:g})" if base and long else "")
              for name in SETTINGS[1:] if base is None or settings[name] != base[name]]
    if base is None:
        others.append("no protocol")
    if data != FINGERPRINTS.get(dataset):
        others.append(f"data {data}")
    return "; ".join([text, *others])


def done_runs(path: Path) -> set[tuple[Any, ...]]:
    """:func:`run_key` of every run already in the results file."""
    return {run_key(with_defaults(row)) for row in read_rows(path)} if path.exists() else set()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(out: Path, row: dict[str, Any]) -> None:
    """Append one run's row to the results file (and echo it)."""
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def plan(args: argparse.Namespace) -> list[tuple[str, Path, str, dict[str, Any]]]:
    """``(dataset, path, data fingerprint, settings)`` of every dataset of the call, all checked before any
    training."""
    given = {name: getattr(args, name) for name in SETTINGS if name != "num_layers"}
    out = []
    for dataset in args.datasets or list(PROTOCOL):
        settings = resolve_settings(dataset, given)
        path = args.data / dataset
        out.append((dataset, path, data_fingerprint(path), settings))
    return out


def run(args: argparse.Namespace) -> None:
    """Train and score every (dataset, seed, recipe) whose run is not yet in ``args.out``; say which are."""
    jobs = plan(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    where = args.where or machine(args.device)
    done = done_runs(args.out)
    for dataset, path, data, settings in jobs:
        key = (dataset, data, *(settings[name] for name in SETTINGS))
        todo = []
        for seed in args.seeds:
            for loss in args.losses:
                stages = recipes.spec(loss).stage_epochs(settings["epochs"])
                if (*key, loss, seed, stages[-1] if len(stages) > 1 else None) in done:
                    print(f"skipped: {dataset} {loss} seed {seed} ({describe(key, long=False)}): already in "
                          f"{args.out}", file=sys.stderr, flush=True)
                else:
                    todo.append((loss, seed))
        if not todo:
            continue
        splits = load_hmc(path, merge_valid=True)
        config = TrainConfig(**settings, device=args.device)
        base = {"dataset": dataset, "data_sha256": data,
                "full_protocol": is_full_protocol(dataset, data, settings), **settings,
                "date": datetime.date.today().isoformat()}
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
                           on_result=lambda r, row=row: _append(args.out, {**row, **r.to_dict(), "where": where}))


def _mean_std(values: list[float], digits: int = 3, percent: bool = False) -> str:
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    unit = "%" if percent else ""
    if len(values) < 2:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}{unit}"


def _recipe(row: dict[str, Any]) -> str:
    return recipe_of(row["loss"], row["output"])


def _name(row: dict[str, Any]) -> str:
    """The row's method: its recipe's title (the recipe's name when the table no longer has it)."""
    try:
        return recipes.spec(_recipe(row)).title
    except ValueError:
        return _recipe(row)


def _method_order(name: str) -> int:
    order = [title for t in TRAININGS for title in (recipes.spec(t).title, f"{recipes.spec(t).title} + coherent")]
    return order.index(name) if name in order else len(order)


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Protocol datasets in table order, then the others by name; more epochs first; then the settings."""
    dataset, data, *values = key
    order = list(PROTOCOL)
    return (order.index(dataset) if dataset in order else len(order), dataset, -values[0],
            data != FINGERPRINTS.get(dataset), str(data), [str(v) for v in values])


def table(rows: Iterable[dict[str, Any]]) -> str:
    """The markdown table of the results: mean ± std over seeds per dataset, data, settings and method; published
    AU(PRC) beside ours where the data are the protocol's files."""
    groups: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in map(with_defaults, rows):
        groups[setting_key(r)][_name(r)].append(r)
    lines = ["| dataset | epochs | method | seeds | AU(PRC) | C-HMCNN | HMCN-F | violations @0.5 | violations any "
             "threshold | hF1 @0.5 | train s / run | ran on |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=_sort_key):
        dataset, data = key[:2]
        published = PUBLISHED.get(dataset) if data == FINGERPRINTS.get(dataset) else None
        chmcnn, hmcnf = ("—", "—") if published is None else (f"{published[0]:.3f}", f"{published[1]:.3f}")
        for name in sorted(groups[key], key=_method_order):
            g = groups[key][name]
            seeds = ",".join(str(s) for s in sorted({r["seed"] for r in g}))
            where = "; ".join(sorted({r["where"] for r in g}))
            lines.append(
                f"| {dataset} | {describe(key)} | {name} | {seeds} | {_mean_std([r['auprc'] for r in g])} | {chmcnn} | "
                f"{hmcnf} | {_mean_std([r['violation_05'] for r in g], 1, True)} | "
                f"{_mean_std([r['violation_any'] for r in g], 1, True)} | {_mean_std([r['hf1'] for r in g])} | "
                f"{statistics.fmean(r['train_s'] for r in g):.0f} | {where} |")
    return "\n".join(lines)


def by_seed(rows: Iterable[dict[str, Any]], methods: list[str] | str, baselines: tuple[str, ...] = BASELINES) -> str:
    """A markdown table pairing each of ``methods`` with each baseline seed by seed (same dataset, data, settings
    and seed: the same initial weights and batches), with the difference in AU(PRC); then, per dataset and settings
    and overall, the mean difference and on how many seeds the method is higher."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    index = {(setting_key(r), r["seed"], _name(r)): r for r in map(with_defaults, rows)}
    keys = sorted({k[:2] for k in index if k[2] in methods}, key=lambda k: (_sort_key(k[0]), k[1]))
    header = ["dataset", "epochs", "seed", *(f"{b}: AU(PRC) / hF1" for b in baselines)]
    for m in methods:
        header += [f"{m}: AU(PRC) / hF1 / violations any", *(f"Δ vs {b}" for b in baselines)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    deltas: dict[tuple[str, tuple[Any, ...], str], list[float]] = defaultdict(list)
    for key, seed in keys:
        base = [index.get((key, seed, b)) for b in baselines]
        cells = [key[0], describe(key), str(seed)]
        cells += ["—" if r is None else f"{r['auprc']:.4f} / {r['hf1']:.4f}" for r in base]
        for m in methods:
            r = index.get((key, seed, m))
            if r is None:
                cells += ["—"] * (1 + len(baselines))
                continue
            cells.append(f"{r['auprc']:.4f} / {r['hf1']:.4f} / {100 * r['violation_any']:.1f}%")
            for b, other in zip(baselines, base):
                if other is None:
                    cells.append("—")
                    continue
                delta = r["auprc"] - other["auprc"]
                deltas[(m, key, b)].append(delta)
                cells.append(f"{delta:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m in methods:
        for b in baselines:
            mine = {k: v for k, v in deltas.items() if k[0] == m and k[2] == b}
            for (_, key, _), d in sorted(mine.items(), key=lambda kv: _sort_key(kv[0][1])):
                lines.append(f"- {m} vs {b}, {key[0]} ({describe(key, long=False)}): mean Δ AU(PRC) "
                             f"{statistics.fmean(d):+.4f}, higher on {sum(x > 0 for x in d)} of {len(d)} seeds")
            every = [x for d in mine.values() for x in d]
            if every:
                above = sum(statistics.fmean(d) > 0 for d in mine.values())
                lines.append(f"- **{m} vs {b}, all pairs: mean Δ AU(PRC) {statistics.fmean(every):+.4f}, higher on "
                             f"{sum(x > 0 for x in every)} of {len(every)} seeds; mean Δ above 0 on {above} of "
                             f"{len(mine)} datasets**")
    return "\n".join(lines)


def _positive(kind: type, name: str) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text}")
        return value

    return parse


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:  # False for NaN too
        raise argparse.ArgumentTypeError(f"--dropout must be in [0, 1), got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"--weight-decay must be a finite number >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HMC,
                        help="the folder holding one folder (or file prefix) per dataset (default: the project's "
                             f"{HMC})")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="datasets under --data (default: every dataset of the protocol table; with --table or "
                             "--by-seed: every dataset in --out)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES), choices=TRAININGS, metavar="RECIPE",
                        help=f"recipes to train, of {', '.join(TRAININGS)} (default: {' '.join(DEFAULT_LOSSES)}); "
                             "each model whose head is the sigmoid is also scored after `coherent`")
    parser.add_argument("--epochs", type=_positive(int, "--epochs"), default=None,
                        help="training epochs (default: the protocol's; needed for a dataset outside it)")
    parser.add_argument("--hidden", type=_positive(int, "--hidden"), default=None,
                        help="hidden units of the MLP (default: the protocol's; needed for a dataset outside it)")
    parser.add_argument("--lr", type=_positive(float, "--lr"), default=None,
                        help="Adam's learning rate (default: the protocol's; needed for a dataset outside it)")
    parser.add_argument("--batch-size", type=_positive(int, "--batch-size"), default=None,
                        help=f"batch size (default: the protocol's, {COMMON['batch_size']})")
    parser.add_argument("--weight-decay", type=_non_negative, default=None,
                        help=f"Adam's weight decay (default: the protocol's, {COMMON['weight_decay']:g})")
    parser.add_argument("--dropout", type=_rate, default=None,
                        help=f"dropout after each hidden layer (default: the protocol's, {COMMON['dropout']})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--where", default=None, help="machine description stored with each row (default: detected)")
    parser.add_argument("--out", type=Path, default=Path("hmc_quality.jsonl"),
                        help="results file, appended to and read by --table and --by-seed (default: "
                             "hmc_quality.jsonl in the current folder; the project's table is "
                             "benchmarks/results/hmc_quality.jsonl)")
    parser.add_argument("--stack", action="store_true",
                        help="train all of a dataset's runs at once as one stacked model (hmc_experiments."
                             "train_stacked; CUDA graphs on a GPU)")
    parser.add_argument("--progress", action="store_true", help="progress lines on stderr")
    parser.add_argument("--by-seed", nargs="+", default=None, metavar="METHOD",
                        help="only print each METHOD (a table row name, e.g. 'Conditional (chain rule)') against "
                             f"{' and '.join(BASELINES)}, seed by seed, from --out")
    parser.add_argument("--table", action="store_true",
                        help="only print the markdown table of --out (of the --datasets given, default all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if not (args.table or args.by_seed):
            start = time.perf_counter()
            run(args)
            print(f"wall time: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if not args.out.exists():
            hint = f" (the project's table: --out {RESULTS.relative_to(Path.cwd())})" if RESULTS.is_relative_to(
                Path.cwd()) else ""
            raise UsageError(f"no results file {args.out}{hint}")
    except UsageError as err:
        print(f"hmc_quality.py: error: {err}", file=sys.stderr)
        return 2
    rows = read_rows(args.out)
    if args.datasets:
        rows = [r for r in rows if r["dataset"] in args.datasets]
    print(by_seed(rows, args.by_seed) if args.by_seed else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
