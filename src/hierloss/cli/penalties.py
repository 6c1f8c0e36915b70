"""``hierloss penalties``: estimate per-edge penalties from a CSV of labels and print (or save) the table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

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


def _derive_chexpert(frame: Any, uncertain: str | None, with_uncertain: bool) -> Any:
    import numpy as np

    from hierloss.hierarchies import _ANY_OF, CHEXPERT_OBSERVATIONS, chexpert_targets

    obs = list(CHEXPERT_OBSERVATIONS)
    missing = [c for c in obs if c not in frame.columns]
    if missing:
        raise ValueError(f"--hierarchy chexpert: the CSV lacks the observation columns {missing!r}")
    values = frame[obs].to_numpy(dtype=np.float64, na_value=np.nan)
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


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit code (2 with a message on bad input)."""
    import pandas as pd

    from hierloss.hierarchies import chexpert
    from hierloss.hierarchy import Hierarchy
    from hierloss.penalties import BetaPenalty, ConditionalPenalty, FixedPenalty, PenaltyEstimator

    try:
        frame = pd.read_csv(args.labels)
        if args.hierarchy == "chexpert":
            hierarchy = chexpert(uncertain=not args.no_uncertain_label)
            if any(lab not in frame.columns for lab in hierarchy.labels):
                frame = _derive_chexpert(frame, args.uncertain, not args.no_uncertain_label)
        else:
            hierarchy = Hierarchy.from_json(Path(args.hierarchy).read_text())
        estimator: PenaltyEstimator
        if args.estimator == "conditional":
            estimator = ConditionalPenalty(args.smoothing)
        elif args.estimator == "beta":
            estimator = BetaPenalty(args.strength)
        else:
            estimator = FixedPenalty(args.value)
        penalties = estimator.fit(hierarchy, frame, uncertain=args.uncertain)
    except (OSError, ValueError) as err:
        print(f"hierloss penalties: error: {err}", file=sys.stderr)
        return 2
    table = penalties.table()
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False))
    if args.out is not None:
        if args.out.suffix.lower() == ".json":
            args.out.write_text(json.dumps(penalties.to_dict(), indent=2))
        else:
            table.to_csv(args.out, index=False)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
