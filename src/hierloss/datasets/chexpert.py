"""CheXpert: the 21-label hierarchy of Asadi et al. (2025) and the derivation of its targets from the observations.

:func:`chexpert_hierarchy` is the paper's hierarchy; :func:`chexpert_targets` turns CheXpert's label files (the 14
observations: 1, 0, -1 for uncertain, blank for not mentioned) into the model's targets, with an uncertainty policy
for the -1s, as the reference code did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from hierloss._validation import check_unique_columns
from hierloss.hierarchy import Hierarchy

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CHEXPERT_OBSERVATIONS", "CHEXPERT_PARENTS", "CHEXPERT_POLICIES", "LSR_RANGES", "chexpert_hierarchy",
           "chexpert_targets"]

#: The 14 CheXpert observations, sorted by name (the column order of the reference code).
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: The six parent labels added by the paper, sorted by name.
CHEXPERT_PARENTS: tuple[str, ...] = (
    "Abnormal",
    "Cardiac",
    "Fluid Accumulation",
    "Missing Lung Tissue",
    "Opacity",
    "Other",
)

_CHEXPERT_CHILDREN: dict[str, tuple[str, ...]] = {
    "Abnormal": ("Opacity", "Cardiac", "Other"),
    "Opacity": ("Lung Opacity", "Lung Lesion", "Fluid Accumulation", "Missing Lung Tissue"),
    "Fluid Accumulation": ("Edema", "Consolidation", "Pleural Effusion", "Pneumonia"),
    "Missing Lung Tissue": ("Atelectasis", "Pneumothorax", "Pleural Other"),
    "Cardiac": ("Enlarged Cardiomediastinum", "Cardiomegaly"),
    "Other": ("Fracture", "Support Devices"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
    "Consolidation": ("Pneumonia",),
}

# Parent columns that are "any of" these observations (as the reference derived them).
_ANY_OF: dict[str, tuple[str, ...]] = {
    "Cardiac": ("Enlarged Cardiomediastinum", "Cardiomegaly"),
    "Opacity": ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Pleural Effusion",
                "Atelectasis", "Pneumothorax", "Pleural Other"),
    "Fluid Accumulation": ("Edema", "Consolidation", "Pneumonia", "Pleural Effusion"),
    "Missing Lung Tissue": ("Atelectasis", "Pneumothorax", "Pleural Other"),
    "Other": ("Fracture", "Support Devices"),
}


#: What :func:`chexpert_targets` can do with an uncertain (-1) observation.
CHEXPERT_POLICIES: tuple[str, ...] = ("zeros", "ones", "ignore", "zeros-lsr", "ones-lsr")
UncertaintyPolicy = Literal["zeros", "ones", "ignore", "zeros-lsr", "ones-lsr"]
#: The ranges the label-smoothing policies draw an uncertain observation's soft target from (Pham et al. 2021).
LSR_RANGES: dict[str, tuple[float, float]] = {"zeros-lsr": (0.0, 0.3), "ones-lsr": (0.55, 0.85)}

_NO_FINDING = CHEXPERT_OBSERVATIONS.index("No Finding")


def chexpert_hierarchy(uncertain_label: bool = True) -> Hierarchy:
    """The CheXpert hierarchy of Asadi et al. (2025).

    21 labels (20 with ``uncertain_label=False``): the 14 observations sorted by name, then ``'Uncertain'``, then
    the six parents sorted by name (the reference's column order). 20 edges; 'Cardiomegaly' has two parents
    ('Cardiac' and 'Enlarged Cardiomediastinum') and 'Pneumonia' two ('Fluid Accumulation' and 'Consolidation').
    'No Finding' and 'Uncertain' belong to no edge.

    Args:
        uncertain_label: include the 'Uncertain' label (1 when all 14 observations are 0).

    Example:
        >>> h = chexpert_hierarchy()
        >>> h.num_labels, h.num_edges
        (21, 20)
        >>> h.parents("Cardiomegaly")
        ('Enlarged Cardiomediastinum', 'Cardiac')
    """
    labels = [*CHEXPERT_OBSERVATIONS, *(["Uncertain"] if uncertain_label else []), *CHEXPERT_PARENTS]
    edges = [(parent, child) for parent, children in _CHEXPERT_CHILDREN.items() for child in children]
    return Hierarchy(labels, edges)


def chexpert_targets(frame: pd.DataFrame, policy: UncertaintyPolicy | None = None,
                     uncertain_label: bool = True, seed: int = 0) -> pd.DataFrame:
    """Derive the model's targets from CheXpert observations, as the reference did: the one derivation.

    ``'Uncertain'`` = 1 when all 14 observations are 0; ``'Abnormal'`` = 1 unless 'No Finding' or 'Uncertain' is
    1 (with ``uncertain_label=False``: unless 'No Finding' is 1 or all observations are 0); 'Cardiac', 'Opacity',
    'Fluid Accumulation', 'Missing Lung Tissue' and 'Other' = 1 when any of their observations is 1.

    This is *not* :meth:`Hierarchy.propagate`: the observations are left as they are, so rows that violate the
    hierarchy in the data (e.g. 'No Finding' together with 'Support Devices') keep their violations, which the
    data-driven edge weights exist to measure.

    Args:
        frame: a DataFrame holding the 14 observation columns (any order, each once; other columns kept).
        policy: ``None``: the observations must already be 0/1. Otherwise the frame holds CheXpert's raw values —
            1, 0, -1 (uncertain) and blank (not mentioned) — and a blank becomes 0, as in the reference, while a -1
            becomes 0 (``'zeros'``), 1 (``'ones'``) or is left out (``'ignore'``: NaN, and so is every derived
            column whose value depends on how that observation would be resolved — a parent is known as soon as
            one of its observations is 1, or when all of them are known 0s). The label-smoothing policies of Pham
            et al. (2021) make a -1 a soft target drawn uniformly from ``[0, 0.3]`` (``'zeros-lsr'``, U-Zeros+LSR)
            or ``[0.55, 0.85]`` (``'ones-lsr'``, U-Ones+LSR); the derived columns are then those of ``'zeros'`` /
            ``'ones'`` (only the uncertain observations themselves are soft). Edge weights must be fitted on hard
            targets (``'zeros'``, ``'ones'`` or ``'ignore'``): the estimators refuse soft values.
        uncertain_label: add the 'Uncertain' column.
        seed: seed of the label-smoothing draws (the same seed gives the same targets).

    Returns:
        A new DataFrame: ``frame``'s columns plus the derived ones, which overwrite any existing columns of the
        same name. With a policy the observation columns hold the mapped float values. The derived columns are
        int64 0/1, or float64 with NaN under ``'ignore'``. Select ``chexpert_hierarchy(uncertain_label).labels`` to
        get the model's target matrix.

    Raises:
        ValueError: if an observation column is missing, an observation or derived column appears more than once
            (naming it), the policy is unknown, or a value is not allowed (not 0/1 without a policy; not 1, 0, -1
            or blank with one), naming the column, the value and how many such values the column holds.

    Example:
        >>> import pandas as pd
        >>> raw = pd.DataFrame([[1.0, float("nan"), -1.0] + [0.0] * 11], columns=list(CHEXPERT_OBSERVATIONS))
        >>> targets = chexpert_targets(raw, policy="ignore")
        >>> targets[["Atelectasis", "Consolidation", "Missing Lung Tissue", "Fluid Accumulation"]].values.tolist()
        [[1.0, nan, 1.0, nan]]
    """

    if policy is not None and policy not in CHEXPERT_POLICIES:
        raise ValueError(f"policy must be one of {CHEXPERT_POLICIES} or None, got {policy!r}")
    missing = [name for name in CHEXPERT_OBSERVATIONS if name not in frame.columns]
    if missing:
        raise ValueError(f"chexpert_targets: missing observation columns {missing!r}")
    names = (["Uncertain"] if uncertain_label else []) + list(CHEXPERT_PARENTS)
    _refuse_duplicates(frame, [*CHEXPERT_OBSERVATIONS, *names])
    values = _observations(frame, policy)  # a -1 is NaN here
    uncertain = np.isnan(values) if policy is not None else None
    hard = {"zeros": 0.0, "ones": 1.0, "zeros-lsr": 0.0, "ones-lsr": 1.0}.get(policy or "")
    if hard is not None and uncertain is not None:  # the derived columns follow the hard value; label smoothing
        values = np.where(uncertain, hard, values)        # softens only the -1s, below
    out = frame.copy()
    unknown = uncertain if policy == "ignore" else None
    if unknown is None or not unknown.any():
        derived = _derive(values.astype(bool), uncertain_label)
        columns = {name: derived[name].astype(np.int64) for name in names}
    else:  # 'ignore': a derived value is known when every resolution of the unknown observations agrees on it
        # Every derived column is monotone in every observation (increasing, but 'Abnormal' in 'No Finding' and
        # 'Uncertain', decreasing), so its least and greatest values over all resolutions are reached at one of
        # four fillings of the unknown entries: all 0; all 1; only 'No Finding' 1; all but 'No Finding' 1.
        no_finding = np.zeros(len(CHEXPERT_OBSERVATIONS), dtype=bool)
        no_finding[_NO_FINDING] = True
        fillings = [np.zeros_like(unknown), unknown, unknown & no_finding, unknown & ~no_finding]
        resolved = [_derive(np.where(unknown, filling, values).astype(bool), uncertain_label) for filling in fillings]
        columns = {}
        for name in names:
            stacked = np.stack([r[name] for r in resolved])
            columns[name] = np.where((stacked == stacked[0]).all(axis=0), stacked[0].astype(np.float64), np.nan)
    if policy in LSR_RANGES and uncertain is not None:
        low, high = LSR_RANGES[policy]
        values = np.where(uncertain, np.random.default_rng(seed).uniform(low, high, size=values.shape), values)
    if policy is not None:
        for i, name in enumerate(CHEXPERT_OBSERVATIONS):
            out[name] = values[:, i]
    for name in names:
        out[name] = columns[name]
    result: pd.DataFrame = out
    return result


def _refuse_duplicates(frame: pd.DataFrame, labels: list[str]) -> None:
    """Refuse a label column that ``frame`` holds more than once, naming it (other columns may repeat)."""
    check_unique_columns(frame.columns, labels, "chexpert_targets: the frame", "the targets need")


def _observations(frame: pd.DataFrame, policy: str | None) -> np.ndarray:
    """The 14 observations as a float64 ``(N, 14)`` array: with a policy, a blank is 0 and a -1 is NaN."""
    import pandas as pd

    names = list(CHEXPERT_OBSERVATIONS)
    try:
        values = frame.loc[:, names].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # a non-numeric cell: name the first one
        for name in names:
            raw = frame[name]
            numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(numeric) & raw.notna().to_numpy()
            if bad.any():
                _refuse(frame, name, int(np.flatnonzero(bad)[0]), int(bad.sum()), policy)
        raise
    bad = (values != 0.0) & (values != 1.0)  # True at NaN (a blank)
    blank = np.isnan(values) if policy is not None else None
    if blank is not None:  # with a policy, -1 and blank are allowed too
        bad &= (values != -1.0) & ~blank
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        _refuse(frame, names[col], int(np.flatnonzero(bad[:, col])[0]), int(bad[:, col].sum()), policy)
    if blank is not None:
        values = np.where(blank, 0.0, values)  # not mentioned = negative, as the reference did
        values[values == -1.0] = np.nan
    out: np.ndarray = values
    return out


def _refuse(frame: pd.DataFrame, name: str, row: int, count: int, policy: str | None) -> None:
    value = frame[name].iloc[row]
    value = value.item() if isinstance(value, np.generic) else value
    what = "{0, 1}" if policy is None else "{1, 0, -1, blank}"
    hint = "; pass policy='zeros', 'ones' or 'ignore' for CheXpert's raw -1 and blank labels" if policy is None else ""
    raise ValueError(f"chexpert_targets: column {name!r} holds {value!r} ({count} values outside {what}){hint}")


def _derive(observations: np.ndarray, uncertain_label: bool) -> dict[str, np.ndarray]:
    """The derived columns (bool) of 0/1 observations ``(N, 14)``."""
    column = {name: observations[:, i] for i, name in enumerate(CHEXPERT_OBSERVATIONS)}
    all_zero = np.asarray(~observations.any(axis=1))
    derived: dict[str, np.ndarray] = {"Abnormal": ~(column["No Finding"] | all_zero)}
    if uncertain_label:
        derived["Uncertain"] = all_zero
    for parent, children in _ANY_OF.items():
        derived[parent] = np.asarray(np.stack([column[c] for c in children]).any(axis=0))
    return derived
