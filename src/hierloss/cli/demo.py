"""``hierloss demo``: train the same MLP with BCE, HBCE, HBCE hard and MCLoss, and print one comparison table."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hierloss import recipes
from hierloss.cli._errors import CommandError, one_line

__all__ = ["DEFAULT_RECIPES", "add_parser", "format_table", "run"]

#: The recipes the demo trains unless told otherwise (``--losses``).
DEFAULT_RECIPES: tuple[str, ...] = ("bce", "hbce", "hbce-hard", "mcloss")

_HELP = """Train the same small MLP with several losses and compare them on one table.

By default the data is synthetic (hierloss.datasets.make_hierarchical_classification): a random DAG of 120 labels
and 3,000 samples, generated on the spot, nothing to download. --data runs on a real hierarchical multi-label
benchmark instead: a folder (or path prefix) holding one dataset's Clus HMC ARFF files, NAME.train.arff,
NAME.test.arff and optionally NAME.valid.arff (also .arff.gz), such as the FunCat and Gene Ontology datasets
redistributed with C-HMCNN. The model then trains on train + valid and is scored on test.

Each name of --losses is a recipe of hierloss.recipes: a training criterion and a prediction head. A model whose
head is the plain sigmoid is scored twice: on its raw sigmoid outputs, and after hierloss.metrics.coherent (each
label's score becomes the max over itself and its descendants), which removes every violation at inference.
MCLoss predicts through C-HMCNN's max-constraint module, so its output is already coherent; so does conditional
training (conditional: ConditionalBCELoss, predictions through the chain rule; conditional-ft: the same, with the
last fifth of the epochs fine-tuning on the chain rule's marginals with ChainRuleBCELoss).

Training runs on one CPU thread unless --threads says otherwise: this small model runs no faster on more, and
several times slower when other programs keep the cores busy. The last line says how long the demo took."""

# column key, header, higher is better, formatted as a percentage
_COLUMNS: tuple[tuple[str, str, bool, bool], ...] = (
    ("auprc", "AU(PRC)", True, False),
    ("auroc", "AUROC", True, False),
    ("violation_05", "viol@0.5", False, True),
    ("violation_any", "viol any", False, True),
    ("hf1", "hF1", True, False),
)


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` sub-command."""
    parser = subparsers.add_parser("demo", help="compare BCE, HBCE, HBCE hard and MCLoss on one table",
                                   description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="an HMC dataset folder or path prefix (default: synthetic data)")
    parser.add_argument("--samples", type=int, default=3000,
                        help="synthetic data: number of samples, two thirds for training (default 3000)")
    parser.add_argument("--tree", action="store_true", help="synthetic data: a tree instead of a DAG")
    parser.add_argument("--losses", nargs="+", default=list(DEFAULT_RECIPES), choices=recipes.names(),
                        metavar="RECIPE",
                        help=f"recipes to train, in table order, of {', '.join(recipes.names())} (default: "
                             f"{', '.join(DEFAULT_RECIPES)})")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per loss (default 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, > 0 (default 1e-3)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden units of the 3-layer MLP (default 256)")
    parser.add_argument("--dropout", type=float, default=0.3,
                        help="dropout after each hidden layer, in [0, 1) (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the batches")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads torch may use (default 1; see above)")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="save a comparison figure (needs matplotlib; any format it writes: .png, .pdf, .svg, ...)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.set_defaults(func=run)


def _symbols(stream: Any) -> dict[str, str]:
    """Unicode marks where the stream can encode them, ASCII otherwise."""
    fancy = {"up": "↑", "down": "↓", "ok": "✓", "same": "″", "dash": "—"}
    try:
        "".join(fancy.values()).encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return {"up": "+", "down": "-", "ok": "ok", "same": '"', "dash": "-"}
    return fancy


def format_table(results: Sequence[Any], markdown: bool = False, color: bool = False,
                 symbols: dict[str, str] | None = None) -> str:
    """The comparison table of :class:`~hierloss.cli._training.Result` rows, with its legend.

    The best value of each column is marked ``*`` (bold with ``color``); a violation rate of exactly zero is
    marked with a check (green with ``color``). A row that scores the row above's model through another head
    (``+ coherent``) shows its training time as a ditto mark.
    """
    marks = symbols or _symbols(sys.stdout)
    best: dict[str, float] = {}
    for key, _, higher, _ in _COLUMNS:
        values = [r.scores[key] for r in results]
        best[key] = max(values) if higher else min(values)
    header = ["method", *[f"{title}{marks['up'] if higher else marks['down']}" for _, title, higher, _ in _COLUMNS],
              "train s"]
    body: list[list[tuple[str, str]]] = []  # (plain text, style) per cell
    for r in results:
        name = r.name + {"max-constraint": " (1)", "chain-rule": " (2)"}.get(r.head, "")
        cells: list[tuple[str, str]] = [(name, "")]
        for key, _, _, percent in _COLUMNS:
            value = r.scores[key]
            if percent and value == 0:
                text, style = f"0 {marks['ok']}", "zero"
            else:
                text, style = (f"{100 * value:.1f}%" if percent else f"{value:.3f}"), ""
            if value == best[key] and len(results) > 1:
                text, style = text + "*", style or "best"
            cells.append((text, style))
        cells.append((marks["same"] if r.same_model else f"{r.train_s:.1f}", ""))
        body.append(cells)
    legend = [
        "* best in column.  viol = share of test samples with a child scored above its parent: @0.5 = parent < 0.5 "
        "< child (a contradictory prediction), any = at some threshold (what ranking metrics see); "
        f"0 {marks['ok']} = none.",
        "+ coherent = the same model's outputs after hierloss.metrics.coherent (max over descendants); "
        "(1) MCLoss predicts through C-HMCNN's max-constraint module: coherent by construction."
        + (" (2) Conditional training predicts through the chain rule (hierloss.layers.ChainRule): coherent by "
           "construction." if any(r.head == "chain-rule" for r in results) else ""),
        "AU(PRC) = micro average precision; AUROC weighted by positives; hF1 = micro hierarchical F1 at 0.5.",
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cells in body:
            lines.append("| " + " | ".join(f"**{t}**" if s == "best" else t for t, s in cells) + " |")
        return "\n".join([*lines, "", *legend])
    widths = [max(len(h), *(len(cells[i][0]) for cells in body)) for i, h in enumerate(header)]
    styles = {"best": "\033[1m", "zero": "\033[32m"}

    def render(cells: list[tuple[str, str]]) -> str:
        out = []
        for i, (text, style) in enumerate(cells):
            padded = text.ljust(widths[i]) if i == 0 else text.rjust(widths[i])
            out.append(f"{styles[style]}{padded}\033[0m" if color and style else padded)
        return "  ".join(out)

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([render([(h, "") for h in header]), rule, *(render(c) for c in body), rule, *legend])


def _figure(results: Sequence[Any], title: str) -> Any:
    """The comparison figure: AU(PRC), the violation rates and hF1 per row, every value written beside its mark.

    The score panels show dots on an axis zoomed to the values (with bars from 0, 0.283 and 0.289 would look
    equal); a violation rate of zero is written as "0", so an empty row reads as none rather than as missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.5 * len(results) + 2.4), sharey=True)
    positions = list(range(len(results)))[::-1]

    def scores(ax: Any, values: list[float], color: str, heading: str) -> None:
        ax.scatter(values, positions, color=color, zorder=3)
        low, high = min(values), max(values)
        pad = max(0.15 * (high - low), 0.005)
        ax.set_xlim(low - pad, high + 2.5 * pad)  # room on the right for the labels
        for value, y in zip(values, positions):
            ax.annotate(f"{value:.3f}", (value, y), xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.set_title(heading)

    scores(axes[0], [r.scores["auprc"] for r in results], "tab:blue",
           "AU(PRC), higher is better\n(axis zoomed to the values)")
    at_05 = [100 * r.scores["violation_05"] for r in results]
    at_any = [100 * r.scores["violation_any"] for r in results]
    top = max([*at_05, *at_any, 1.0])
    for shift, values, color, label in ((0.2, at_05, "tab:red", "at 0.5"),
                                        (-0.2, at_any, "tab:orange", "at any threshold")):
        ys = [p + shift for p in positions]
        axes[1].barh(ys, values, height=0.4, color=color, label=label)
        for value, y in zip(values, ys):
            axes[1].annotate("0" if value == 0 else f"{value:.0f}%" if value >= 10 else f"{value:.1f}%",
                             (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    axes[1].set_xlim(0, top * 1.15)
    axes[1].set_title("samples with a violation, %, lower is better")
    axes[1].legend(loc="lower right", fontsize=8)
    scores(axes[2], [r.scores["hf1"] for r in results], "tab:green", "hierarchical F1, higher is better\n(axis zoomed)")
    axes[0].set_yticks(positions, names)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _plot(results: Sequence[Any], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = _figure(results, title)
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "hidden", "samples", "threads"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise CommandError(f"--lr must be a positive finite number, got {args.lr:g}")
    if not 0 <= args.dropout < 1:  # False for NaN too
        raise CommandError(f"--dropout must be in [0, 1), got {args.dropout:g}")
    if not 0 <= args.seed < 2**63:
        raise CommandError(f"--seed must be in [0, 2**63), got {args.seed}")


def _resolve_device(spec: str) -> str:
    """The device to train on; refuses one this torch build or machine cannot use, before any work is done."""
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CommandError(f"--device {spec!r}: {err}") from None
    if device.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:  # a CPU-only build
            raise CommandError(f"--device {spec!r}: CUDA is not available in this torch build (torch "
                               f"{torch.__version__} was built without CUDA); use --device cpu, or install a CUDA "
                               "build of torch")
        if not torch.cuda.is_available():
            raise CommandError(f"--device {spec!r}: no CUDA device is visible (torch.cuda.is_available() is False; "
                               "check the driver and CUDA_VISIBLE_DEVICES), use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            names = ", ".join(f"cuda:{i}" for i in range(count))
            raise CommandError(f"--device {spec!r}: this machine has {count} CUDA device{'s' * (count != 1)} "
                               f"({names})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(f"--device {spec!r}: MPS is not available (it needs an Apple-silicon Mac and a torch "
                           "build with MPS); use --device cpu")
    elif device.type != "cpu":
        try:  # xpu, meta, ...: can a tensor live there and come back?
            torch.zeros(1, device=device).add(1).cpu()
        except (RuntimeError, AssertionError, NotImplementedError, ValueError) as err:
            raise CommandError(f"--device {spec!r}: {_first_sentence(err)}") from None
    return spec


def _first_sentence(err: BaseException) -> str:
    """A torch error's first sentence: its dispatcher messages run to thousands of characters."""
    text = one_line(err)
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


def _check_plot(path: Path) -> None:
    """Refuse a ``--plot`` file that could not be written, before the training."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise CommandError("--plot needs matplotlib (pip install 'hierloss[plot]')") from None
    if path.is_dir():
        raise CommandError(f"--plot {str(path)!r} is a directory; name an image file such as demo.png")
    if not path.parent.is_dir():
        raise CommandError(f"--plot {str(path)!r}: the directory {str(path.parent)!r} does not exist")
    fmt = path.suffix[1:].lower()
    if not fmt:
        raise CommandError(f"--plot {str(path)!r}: give the file an extension, e.g. {path.name}.png")
    formats = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in formats:
        raise CommandError(f"--plot {str(path)!r}: unsupported format {fmt!r}; matplotlib writes "
                           f"{', '.join(sorted(formats))}")


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns 0, or raises ``CommandError`` on a mistake (``main`` prints it, exits 2).

    Every argument is checked before any data is loaded or any model trained.
    """
    import torch

    start = time.perf_counter()
    _check_numbers(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, start)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, start: float) -> int:
    from hierloss.cli import _training
    from hierloss.datasets import load_hmc, make_hierarchical_classification

    device = _resolve_device(args.device)
    if args.plot is not None:
        _check_plot(args.plot)
    if args.data is not None:
        try:
            splits = load_hmc(args.data, merge_valid=True)
        except (OSError, ValueError) as err:
            raise CommandError(str(err)) from None
        h = splits.hierarchy
        X_train, Y_train, X_test, Y_test = splits.train.X, splits.train.Y, splits.test.X, splits.test.Y
        source = f"{args.data} (train + valid / test)"
    else:
        cut = (2 * args.samples) // 3
        if cut < 1 or cut >= args.samples:
            raise CommandError(f"--samples {args.samples} leaves an empty train or test split")
        data = make_hierarchical_classification(args.samples, 32, depth=4, branching=3, dag=not args.tree,
                                                random_state=args.seed)
        h = data.hierarchy
        X_train, Y_train, X_test, Y_test = data.X[:cut], data.Y[:cut], data.X[cut:], data.Y[cut:]
        source = f"synthetic {'tree' if args.tree else 'DAG'} (make_hierarchical_classification, seed {args.seed})"
    multi = sum(len(h.parents(label)) > 1 for label in h.labels)
    print(f"data: {source}: {h.num_labels} labels, {h.num_edges} edges ({multi} labels with several parents), "
          f"{len(X_train)} train / {len(X_test)} test samples, {X_train.shape[1]} features")
    print(f"model: MLP {X_train.shape[1]}-{args.hidden}-{args.hidden}-{h.num_labels} (ReLU, dropout "
          f"{args.dropout}), Adam lr {args.lr:g}, batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, "
          f"{device}, {_threads(args.threads)}", flush=True)
    results = _training.compare(args.losses, X_train, Y_train, X_test, Y_test, h, args, device,
                                progress=not args.no_progress)
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ and not args.markdown
    print()
    print(format_table(results, markdown=args.markdown, color=color))
    if args.plot is not None:
        try:
            _plot(results, args.plot, f"hierloss demo: {source}")
        except OSError as err:
            raise CommandError(f"cannot write {str(args.plot)!r}: {err.strerror or err}") from None
        print(f"wrote {args.plot}")
    training = sum(r.train_s for r in results if not r.same_model)
    print(f"done in {time.perf_counter() - start:.1f} s (training {training:.1f} s, {_threads(args.threads)})")
    return 0


def _threads(n: int) -> str:
    return f"{n} CPU thread{'s' * (n != 1)}"
