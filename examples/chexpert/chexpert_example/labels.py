"""CheXpert label CSVs: reading, the view filter, the uncertainty policy, the paper's targets and edge penalties.

Needs pandas and hierloss only (no torchvision), so it runs wherever the core library does.

The CheXpert CSVs (``train.csv``, ``train_visualCheXbert.csv``, ``valid.csv``) hold one row per image: ``Path``
(relative to the folder that contains ``CheXpert-v1.0/``), ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and
the 14 observations, each ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned).
The test-set label files of the CheXpert authors (``test_groundtruth.csv``, ``test_labeler.csv``) hold one row per
*study* instead: a ``Study`` column (a folder holding that study's images) and the 14 observations.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pandas as pd

from hierloss import Hierarchy
from hierloss.hierarchies import CHEXPERT_OBSERVATIONS, chexpert, chexpert_targets
from hierloss.penalties import BetaPenalty, ConditionalPenalty, EdgePenalties, FixedPenalty

__all__ = [
    "OBSERVATIONS",
    "PENALTY_ESTIMATORS",
    "POLICIES",
    "VIEWS",
    "apply_uncertainty_policy",
    "derive_targets",
    "fit_penalties",
    "path_column",
    "read_label_csv",
]

UncertaintyPolicy = Literal["ones", "zeros", "ignore"]
View = Literal["frontal", "lateral", "all"]

#: The 14 CheXpert observations (hierloss's column order).
OBSERVATIONS: tuple[str, ...] = CHEXPERT_OBSERVATIONS
#: What to do with an uncertain (-1) label: map it to 1, to 0, or leave it out of the loss (NaN target).
POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore")
#: Which images to keep.
VIEWS: tuple[str, ...] = ("frontal", "lateral", "all")
#: ``--penalty`` choices: the paper's data-driven estimator, a fixed β, or hierloss's shrunken estimator.
PENALTY_ESTIMATORS: tuple[str, ...] = ("data", "fixed", "beta")

_PATH_COLUMNS = ("Path", "Study")
_VIEW_COLUMN = "Frontal/Lateral"
_NO_FINDING = "No Finding"


def path_column(frame: pd.DataFrame) -> str:
    """The column that locates the images: ``'Path'`` (one image per row) or ``'Study'`` (a study folder).

    Raises:
        ValueError: if the frame has neither.
    """
    for name in _PATH_COLUMNS:
        if name in frame.columns:
            return name
    raise ValueError(f"expected a 'Path' or a 'Study' column, got columns {list(frame.columns)!r}")


def _view_of_path(path: str) -> str:
    """'frontal' / 'lateral' from a CheXpert file name such as ``view1_frontal.jpg`` ('' when neither)."""
    name = os.path.basename(path).lower()
    if "frontal" in name:
        return "frontal"
    if "lateral" in name:
        return "lateral"
    return ""


def read_label_csv(path: str | os.PathLike[str], view: View = "all") -> pd.DataFrame:
    """Read a CheXpert label CSV and keep the rows of one view.

    Args:
        path: a CSV with a ``Path`` or ``Study`` column and the 14 observation columns (any order; other columns
            are kept).
        view: ``'frontal'``, ``'lateral'`` or ``'all'``. Rows are filtered on the ``Frontal/Lateral`` column when
            present, else on the file name in ``Path`` (``view1_frontal.jpg``). ``Study`` files name folders, not
            images: their views are filtered when the images are listed (:class:`chexpert_example.data.
            CheXpertDataset`).

    Returns:
        The rows kept, re-indexed from 0, values as read (``-1`` and blanks untouched).

    Raises:
        ValueError: on an unknown ``view``, missing observation columns (naming them), no path column, or a
            ``Frontal/Lateral`` value other than Frontal/Lateral.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    frame = pd.read_csv(path)
    missing = [name for name in OBSERVATIONS if name not in frame.columns]
    if missing:
        raise ValueError(f"{os.fspath(path)}: missing observation columns {missing!r}")
    key = path_column(frame)
    if view == "all":
        return frame.reset_index(drop=True)
    if _VIEW_COLUMN in frame.columns:
        views = frame[_VIEW_COLUMN].astype(str).str.strip().str.lower()
        unknown = sorted(set(views) - {"frontal", "lateral"})
        if unknown:
            raise ValueError(f"{os.fspath(path)}: column {_VIEW_COLUMN!r} holds {unknown[0]!r}; expected "
                             "'Frontal' or 'Lateral'")
        keep = views == view
    elif key == "Path":
        keep = frame[key].astype(str).map(_view_of_path) == view
    else:
        return frame.reset_index(drop=True)
    return frame.loc[keep.to_numpy()].reset_index(drop=True)


def apply_uncertainty_policy(frame: pd.DataFrame, policy: UncertaintyPolicy) -> pd.DataFrame:
    """Map blank observations to 0 (as the reference did) and uncertain ``-1`` ones by ``policy``.

    Args:
        frame: a frame holding the 14 observation columns.
        policy: ``'ones'`` (-1 → 1), ``'zeros'`` (-1 → 0) or ``'ignore'`` (-1 → NaN: left out of the loss).

    Returns:
        A copy with float observation columns in {0, 1} (and NaN for ``'ignore'``).

    Raises:
        ValueError: on an unknown policy, or an observation value outside {1, 0, -1, blank} (naming the column,
            the value and how many such values the column holds).
    """
    if policy not in POLICIES:
        raise ValueError(f"uncertainty policy must be one of {POLICIES}, got {policy!r}")
    out = frame.copy()
    replacement = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
    for name in OBSERVATIONS:
        column = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        not_numeric = frame[name].notna().to_numpy() & np.isnan(column)
        bad = not_numeric | (~np.isnan(column) & ~np.isin(column, (0.0, 1.0, -1.0)))
        if bad.any():
            value = frame[name].to_numpy()[np.flatnonzero(bad)[0]]
            value = value.item() if isinstance(value, np.generic) else value
            raise ValueError(f"column {name!r} holds {value!r} ({int(bad.sum())} values outside "
                             "{1, 0, -1, blank})")
        column = np.where(np.isnan(column), 0.0, column)  # blank = not mentioned = negative (the reference)
        out[name] = np.where(column == -1.0, replacement, column)
    return out


def _resolutions(unknown: np.ndarray) -> list[np.ndarray]:
    """The four 0/1 fillings of the unknown entries that bound every derived column (see derive_targets)."""
    no_finding = np.zeros(len(OBSERVATIONS), dtype=bool)
    no_finding[OBSERVATIONS.index(_NO_FINDING)] = True
    others = ~no_finding
    return [
        np.zeros_like(unknown),
        unknown,
        unknown & no_finding,
        unknown & others,
    ]


def derive_targets(frame: pd.DataFrame, policy: UncertaintyPolicy, with_uncertain: bool = True) -> pd.DataFrame:
    """The model's targets: the policy applied, then hierloss's derived columns, in ``chexpert()`` label order.

    With ``'ones'`` / ``'zeros'`` this is ``chexpert_targets`` on the mapped observations. With ``'ignore'`` an
    uncertain observation is NaN (left out of the loss), and so is every derived column whose value depends on
    how the uncertain observations would be resolved: a parent is known as soon as one of its children is 1, or
    when all of them are known 0s. Exactly so: every derived column is monotone in every observation (the
    parents and 'Abnormal' = not 'No Finding' and any other observation, increasing except in 'No Finding';
    'Uncertain', decreasing), so its least and greatest values over all resolutions are reached at one of four
    fillings of the unknown entries (all 0; all 1; only 'No Finding' 1; all but 'No Finding' 1), and the column
    is determined when those four agree.

    Args:
        frame: a frame holding the 14 observations as read (1, 0, -1, blank).
        policy: ``'ones'``, ``'zeros'`` or ``'ignore'``.
        with_uncertain: include the 'Uncertain' label (21 columns; else 20).

    Returns:
        A float32 frame with the columns ``chexpert(with_uncertain).labels`` and ``frame``'s index: 0, 1, or NaN
        for targets to ignore.
    """
    labels = list(chexpert(uncertain=with_uncertain).labels)
    mapped = apply_uncertainty_policy(frame.loc[:, list(OBSERVATIONS)], policy)
    values = mapped.to_numpy(dtype=np.float64)
    unknown = np.isnan(values)
    if not unknown.any():
        targets = chexpert_targets(mapped, uncertain=with_uncertain).loc[:, labels]
        return targets.astype(np.float32)
    derived = []
    for filling in _resolutions(unknown):
        resolved = pd.DataFrame(np.where(unknown, filling, values), columns=list(OBSERVATIONS), index=frame.index)
        derived.append(chexpert_targets(resolved, uncertain=with_uncertain).loc[:, labels].to_numpy(np.float32))
    stacked = np.stack(derived)
    determined = (stacked == stacked[0]).all(axis=0)
    result = np.where(determined, stacked[0], np.float32(np.nan)).astype(np.float32)
    return pd.DataFrame(result, columns=labels, index=frame.index)


def fit_penalties(targets: pd.DataFrame, hierarchy: Hierarchy, estimator: str = "data",
                  beta: float = 1.0) -> EdgePenalties:
    """Edge penalties for HBCE, fitted on the training targets with :mod:`hierloss.penalties`.

    Args:
        targets: the training targets (:func:`derive_targets`); NaN entries (policy ``'ignore'``) are left out of
            the counts of every edge that touches them.
        hierarchy: the hierarchy whose edges the penalties follow.
        estimator: ``'data'`` (the paper's ``1 − P̂(child = 1 | parent = 0)``), ``'fixed'`` (β on every edge) or
            ``'beta'`` (hierloss's ``BetaPenalty``: the data-driven penalty shrunk toward the pooled rate).
        beta: the fixed penalty β (``'fixed'`` only).

    Returns:
        The :class:`~hierloss.penalties.EdgePenalties`.

    Raises:
        ValueError: on an unknown estimator.
    """
    if estimator == "fixed":
        return FixedPenalty(beta).fit(hierarchy)
    if estimator not in PENALTY_ESTIMATORS:
        raise ValueError(f"penalty estimator must be one of {PENALTY_ESTIMATORS}, got {estimator!r}")
    uncertain = "ignore" if bool(targets.isna().to_numpy().any()) else None
    fitter = ConditionalPenalty() if estimator == "data" else BetaPenalty()
    return fitter.fit(hierarchy, targets, uncertain=uncertain)

