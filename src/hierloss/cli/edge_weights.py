"""``hierloss penalties``: estimate per-edge penalties from a CSV of labels and print (or save) the table."""

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

_HELP = """Estimate per-edge penalties from LABELS.csv (one column per label, 0/1; -1 = uncertain, blank = missing).

With --hierarchy chexpert and a CSV holding the 14 raw CheXpert observations, the derived columns ('Uncertain'
and the six parents) are first computed as the reference did (hierloss.hierarchies.chexpert_targets), after the
--uncertain policy has been applied to the observations. With --uncertain ignore, a derived column is left
missing (and so ignored) where its value depends on an uncertain observation."""


def add_parser(subparsers: Any) -> None:
    """Register the ``penalties`` sub-command."""
    parser = subparsers.add_parser("penalties", help="estimate per-edge penalties from a label CSV",
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
    parser.add_argument("--value", type=float, default=1.0, help="penalty of the fixed estimator")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the table to FILE.csv, or the penalties to FILE.json (EdgePenalties.to_dict)")
    parser.set_defaults(func=run)


def _kleene_any(block: Any) -> Any:
    """Row-wise OR in three-valued logic: 1 if any 1, 0 if all 0, NaN otherwise."""
    import numpy as np

    positive = (block == 1).any(axis=1)
    unknown = np.isnan(block).any(axis=1)
    return np.where(positive, 1.0, np.where(unknown, np.nan, 0.0))


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
    import numpy as np

    from hierloss.hierarchies import _ANY_OF, CHEXPERT_OBSERVATIONS, chexpert_targets

    obs = list(CHEXPERT_OBSERVATIONS)
    missing = [c for c in obs if c not in frame.columns]
    if missing:
        raise ValueError(f"--hierarchy chexpert: the CSV lacks the observation columns {missing!r}")
    values = _numeric(frame, obs)
    unsure = np.isnan(values) | (values == -1)
    if uncertain is None and unsure.any():
        col = int(np.flatnonzero(unsure.any(axis=0))[0])
        raise ValueError(f"column {obs[col]!r} holds {int(unsure[:, col].sum())} uncertain (-1) or missing (blank) "
                         "values; pass --uncertain zeros|ones|ignore")
    out = frame.copy()
    if uncertain in (None, "zeros", "ones"):
        fill = 1.0 if uncertain == "ones" else 0.0
        out[obs] = np.where(unsure, fill, values)
        return chexpert_targets(out, uncertain=with_uncertain)
    # 'ignore': uncertain observations become NaN, derived columns follow three-valued (Kleene) logic.
    known = np.where(unsure, np.nan, values)
    out[obs] = known
    by_name = {name: known[:, i:i + 1] for i, name in enumerate(obs)}
    any_positive = (known == 1).any(axis=1)
    all_zero = np.where(any_positive, 0.0, np.where(np.isnan(known).any(axis=1), np.nan, 1.0))
    if with_uncertain:
        out["Uncertain"] = all_zero
    no_finding_or_empty = _kleene_any(np.hstack([by_name["No Finding"], all_zero[:, None]]))
    out["Abnormal"] = 1.0 - no_finding_or_empty
    for parent, children in _ANY_OF.items():
        out[parent] = _kleene_any(np.hstack([by_name[c] for c in children]))
    return out


def _load_hierarchy(spec: str, with_uncertain: bool) -> Hierarchy:
    """The hierarchy ``--hierarchy`` names: a known one, or a JSON file written by ``Hierarchy.to_json()``."""
    from hierloss.hierarchies import chexpert
    from hierloss.hierarchy import Hierarchy

    if spec == "chexpert":
        return chexpert(uncertain=with_uncertain)
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


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be written before any work is done."""
    if out.is_dir():
        raise CommandError(f"--out {str(out)!r} is a directory; name a .csv or .json file")
    if not out.parent.is_dir():
        raise CommandError(f"--out {str(out)!r}: the directory {str(out.parent)!r} does not exist")


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns 0, or raises ``CommandError`` on a mistake (``main`` prints it, exits 2)."""
    import pandas as pd

    from hierloss.penalties import BetaPenalty, ConditionalPenalty, FixedPenalty, PenaltyEstimator

    if args.out is not None:
        _check_out(args.out)
    hierarchy = _load_hierarchy(args.hierarchy, not args.no_uncertain_label)
    estimator: PenaltyEstimator
    try:
        if args.estimator == "conditional":
            estimator = ConditionalPenalty(args.smoothing)
        elif args.estimator == "beta":
            estimator = BetaPenalty(args.strength)
        else:
            estimator = FixedPenalty(args.value)
    except (ValueError, TypeError) as err:
        option = {"conditional": "smoothing", "beta": "strength", "fixed": "value"}[args.estimator]
        raise CommandError(f"--{option}: {err}") from None
    if not args.labels.exists():
        raise CommandError(f"labels file {str(args.labels)!r} does not exist")
    try:
        frame = pd.read_csv(args.labels)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        raise CommandError(f"{args.labels}: {err}") from None
    try:
        if args.hierarchy == "chexpert" and any(lab not in frame.columns for lab in hierarchy.labels):
            frame = _derive_chexpert(frame, args.uncertain, not args.no_uncertain_label)
        penalties = estimator.fit(hierarchy, frame, uncertain=args.uncertain)
    except (ValueError, TypeError) as err:
        raise CommandError(f"{args.labels}: {err}") from None
    table = penalties.table()
    if args.out is not None:
        try:
            if args.out.suffix.lower() == ".json":
                args.out.write_text(json.dumps(penalties.to_dict(), indent=2))
            else:
                table.to_csv(args.out, index=False)
        except OSError as err:
            raise CommandError(f"cannot write {str(args.out)!r}: {err.strerror or err}") from None
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False))
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
