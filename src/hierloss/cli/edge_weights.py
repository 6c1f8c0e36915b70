"""``hierloss edge-weights``: estimate the per-edge weights from a CSV of labels and print (or save) the table."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierloss.cli._errors import CommandError

if TYPE_CHECKING:
    from hierloss.hierarchy import Hierarchy

__all__ = ["add_parser", "run"]

#: Hierarchies ``--hierarchy`` knows by name.
_KNOWN_HIERARCHIES: tuple[str, ...] = ("chexpert",)

_HELP = """Estimate the edge weights w_e from LABELS.csv (one column per label, 0/1; -1 = uncertain, blank = missing).

With --hierarchy chexpert and a CSV holding the 14 raw CheXpert observations, the derived columns ('Uncertain'
and the six parents) are first computed as the reference did (hierloss.datasets.chexpert_targets): a blank
observation (not mentioned) is 0, a -1 follows --uncertain. With --uncertain ignore, a derived column is left
missing (and so ignored) where its value depends on an uncertain observation."""


def add_parser(subparsers: Any) -> None:
    """Register the ``edge-weights`` sub-command."""
    parser = subparsers.add_parser("edge-weights", help="estimate the per-edge weights from a label CSV",
                                   description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labels", type=Path, help="CSV file of labels, one column per label")
    parser.add_argument("--hierarchy", required=True,
                        help="'chexpert' (the paper's hierarchy) or a JSON file written by Hierarchy.to_json()")
    parser.add_argument("--no-uncertain-label", action="store_true",
                        help="with --hierarchy chexpert: the 20-label hierarchy without 'Uncertain'")
    parser.add_argument("--uncertain", choices=["zeros", "ones", "ignore"], default=None,
                        help="policy for -1 (uncertain) and blank (missing) labels; default: error if any")
    parser.add_argument("--estimator", choices=["conditional", "beta", "fixed"], default="conditional",
                        help="conditional: 1 - P(child=1 | parent=0) (the paper); beta: shrunk toward the pooled "
                             "rate; fixed: --value for every edge")
    parser.add_argument("--smoothing", type=float, default=1e-6, help="epsilon of the conditional estimator")
    parser.add_argument("--strength", type=float, default=10.0, help="prior strength of the beta estimator")
    parser.add_argument("--value", type=float, default=1.0, help="the weight of every edge for the fixed estimator")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the table to FILE.csv, or the weights to FILE.json (EdgeWeights.to_dict)")
    parser.set_defaults(func=run)


def _numeric(frame: Any, columns: list[str]) -> Any:
    """The columns as a float64 array (blank = NaN); a non-numeric cell raises naming its column and row."""
    import numpy as np
    import pandas as pd

    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        column = frame[name]
        values = pd.to_numeric(column, errors="coerce")
        bad = (values.isna() & column.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {name!r} holds the non-numeric value {column.iloc[row]!r} (data row {row + 1})")
        out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _derive_chexpert(frame: Any, uncertain: str | None, with_uncertain: bool) -> Any:
    """The targets of raw CheXpert observations, by :func:`hierloss.datasets.chexpert_targets` (blank = 0 as the
    reference; -1 by ``--uncertain``), after naming any non-numeric cell by its row."""
    import numpy as np

    from hierloss.datasets import CHEXPERT_OBSERVATIONS, chexpert_targets

    obs = list(CHEXPERT_OBSERVATIONS)
    missing = [c for c in obs if c not in frame.columns]
    if missing:
        raise ValueError(f"--hierarchy chexpert: the CSV lacks the observation columns {missing!r}")
    values = _numeric(frame, obs)
    unsure = np.isnan(values) | (values == -1)
    if uncertain is None and unsure.any():
        col = int(np.flatnonzero(unsure.any(axis=0))[0])
        raise ValueError(f"column {obs[col]!r} holds {int(unsure[:, col].sum())} uncertain (-1) or blank values; "
                         "pass --uncertain zeros|ones|ignore (a blank, not mentioned, counts as 0 as in the "
                         "reference; -1 follows the policy)")
    return chexpert_targets(frame, policy=uncertain, uncertain_label=with_uncertain)  # type: ignore[arg-type]


def _load_hierarchy(spec: str, with_uncertain: bool) -> Hierarchy:
    """The hierarchy ``--hierarchy`` names: a known one, or a JSON file written by ``Hierarchy.to_json()``."""
    from hierloss.datasets import chexpert_hierarchy
    from hierloss.hierarchy import Hierarchy

    if spec == "chexpert":
        return chexpert_hierarchy(uncertain_label=with_uncertain)
    if not with_uncertain:
        raise CommandError("--no-uncertain-label only applies to --hierarchy chexpert")
    path = Path(spec)
    if not path.exists():
        close = difflib.get_close_matches(spec.lower(), _KNOWN_HIERARCHIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CommandError(f"--hierarchy {spec!r} is neither a known hierarchy ({', '.join(_KNOWN_HIERARCHIES)}) "
                           f"nor a file{hint}")
    if path.is_dir():
        raise CommandError(f"--hierarchy {spec!r} is a directory, not a hierarchy JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CommandError(f"--hierarchy {path}: cannot read the file as UTF-8 ({err.reason} at byte "
                           f"{err.start})") from None
    except OSError as err:
        raise CommandError(f"--hierarchy {path}: cannot read the file ({err.strerror or err})") from None
    try:
        return Hierarchy.from_json(text)
    except (ValueError, TypeError) as err:
        raise CommandError(f"--hierarchy {path}: {err}") from None


def _header(path: Path) -> list[str]:
    """The names of the CSV's header row as written: ``pd.read_csv`` renames a repeated name ``a`` to ``a.1``."""
    import pandas as pd

    row = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)  # the same parser, no renaming
    return [str(name) for name in row.iloc[0]] if len(row) else []


def _refuse_repeated_labels(path: Path, header: list[str], hierarchy: Hierarchy) -> None:
    """Raise ``CommandError`` naming the label columns that the header holds more than once, and where.

    Other columns may repeat: they are not read. (pandas would keep the first copy of a label and rename the others,
    so a second copy would be silently ignored.)
    """
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(i)
    repeated = [lab for lab in hierarchy.labels if len(positions.get(lab, ())) > 1]
    if not repeated:
        return

    def columns(lab: str) -> str:
        numbers = [str(i) for i in positions[lab]]
        return f"columns {', '.join(numbers[:-1])} and {numbers[-1]}"

    if len(repeated) == 1:
        raise CommandError(f"{path}: the header has the label column {repeated[0]!r} {len(positions[repeated[0]])} "
                           f"times ({columns(repeated[0])}); edge weights need each label column once")
    where = "; ".join(f"{lab!r} in {columns(lab)}" for lab in repeated)
    raise CommandError(f"{path}: the header has the label columns {repeated!r} more than once ({where}); edge "
                       "weights need each label column once")


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be written before any work is done."""
    if out.is_dir():
        raise CommandError(f"--out {str(out)!r} is a directory; name a .csv or .json file")
    if not out.parent.is_dir():
        raise CommandError(f"--out {str(out)!r}: the directory {str(out.parent)!r} does not exist")


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns 0, or raises ``CommandError`` on a mistake (``main`` prints it, exits 2)."""
    import pandas as pd

    from hierloss.edge_weights import BetaWeight, ConditionalWeight, FixedWeight, WeightEstimator

    if args.out is not None:
        _check_out(args.out)
    hierarchy = _load_hierarchy(args.hierarchy, not args.no_uncertain_label)
    estimator: WeightEstimator
    try:
        if args.estimator == "conditional":
            estimator = ConditionalWeight(args.smoothing)
        elif args.estimator == "beta":
            estimator = BetaWeight(args.strength)
        else:
            estimator = FixedWeight(args.value)
    except (ValueError, TypeError) as err:
        option = {"conditional": "smoothing", "beta": "strength", "fixed": "value"}[args.estimator]
        raise CommandError(f"--{option}: {err}") from None
    if not args.labels.exists():
        raise CommandError(f"labels file {str(args.labels)!r} does not exist")
    try:
        frame = pd.read_csv(args.labels)
        header = _header(args.labels)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        raise CommandError(f"{args.labels}: {err}") from None
    _refuse_repeated_labels(args.labels, header, hierarchy)
    try:
        if args.hierarchy == "chexpert" and any(lab not in frame.columns for lab in hierarchy.labels):
            frame = _derive_chexpert(frame, args.uncertain, not args.no_uncertain_label)
        weights = estimator.fit(hierarchy, frame, uncertain=args.uncertain)
    except (ValueError, TypeError) as err:
        raise CommandError(f"{args.labels}: {err}") from None
    table = weights.table()
    if args.out is not None:
        try:
            if args.out.suffix.lower() == ".json":
                args.out.write_text(json.dumps(weights.to_dict(), indent=2))
            else:
                table.to_csv(args.out, index=False)
        except OSError as err:
            raise CommandError(f"cannot write {str(args.out)!r}: {err.strerror or err}") from None
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False))
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
