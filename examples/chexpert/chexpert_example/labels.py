"""CheXpert label CSVs: reading, the view filter, the uncertainty policy, the paper's targets and edge weights.

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
from hierloss.datasets import CHEXPERT_OBSERVATIONS, chexpert_hierarchy, chexpert_targets
from hierloss.edge_weights import BetaWeight, ConditionalWeight, EdgeWeights, FixedWeight

__all__ = [
    "OBSERVATIONS",
    "PENALTY_ESTIMATORS",
    "POLICIES",
    "VIEWS",
    "derive_targets",
    "fit_penalties",
    "hard_policy",
    "path_column",
    "read_label_csv",
]

UncertaintyPolicy = Literal["ones", "zeros", "ignore", "ones-lsr", "zeros-lsr"]
View = Literal["frontal", "lateral", "all"]

#: The 14 CheXpert observations (hierloss's column order).
OBSERVATIONS: tuple[str, ...] = CHEXPERT_OBSERVATIONS
#: What to do with an uncertain (-1) label: map it to 1, to 0, leave it out of the loss (NaN target), or a soft target
#: drawn in [0.55, 0.85] / [0, 0.3] (U-Ones+LSR / U-Zeros+LSR, Pham et al. 2021; training targets only).
POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore", "ones-lsr", "zeros-lsr")
#: Which images to keep.
VIEWS: tuple[str, ...] = ("frontal", "lateral", "all")
#: ``--penalty`` choices: the paper's data-driven estimator, a fixed β, or hierloss's shrunken estimator.
PENALTY_ESTIMATORS: tuple[str, ...] = ("data", "fixed", "beta")

_PATH_COLUMNS = ("Path", "Study")
_VIEW_COLUMN = "Frontal/Lateral"


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


def hard_policy(policy: UncertaintyPolicy) -> UncertaintyPolicy:
    """The policy without label smoothing (``'ones-lsr'`` → ``'ones'``): what evaluation and edge weights use."""
    hard: UncertaintyPolicy = {"ones-lsr": "ones", "zeros-lsr": "zeros"}.get(policy, policy)  # type: ignore[assignment]
    return hard


def derive_targets(frame: pd.DataFrame, policy: UncertaintyPolicy, with_uncertain: bool = True,
                   seed: int = 0) -> pd.DataFrame:
    """The model's targets in ``chexpert_hierarchy()``'s label order, as float32: the library's one derivation,
    :func:`hierloss.datasets.chexpert_targets` with the uncertainty ``policy`` (a blank observation is 0 as in the
    reference; a -1 becomes 1 (``'ones'``), 0 (``'zeros'``), NaN (``'ignore'``: left out of the loss, together with
    every derived target that depends on it), or a soft target drawn with ``seed`` (``'ones-lsr'``, ``'zeros-lsr'``).

    Args:
        frame: a frame holding the 14 observations as read (1, 0, -1, blank).
        policy: ``'ones'``, ``'zeros'`` or ``'ignore'``.
        with_uncertain: include the 'Uncertain' label (21 columns; else 20).
        seed: seed of the label-smoothing draws.

    Returns:
        A float32 frame with the columns ``chexpert_hierarchy(with_uncertain).labels`` and ``frame``'s index: 0, 1,
        or NaN for targets to ignore.
    """
    labels = list(chexpert_hierarchy(uncertain_label=with_uncertain).labels)
    targets = chexpert_targets(frame.loc[:, list(OBSERVATIONS)], policy=policy, uncertain_label=with_uncertain,
                               seed=seed)
    return targets.loc[:, labels].astype(np.float32)


def fit_penalties(targets: pd.DataFrame, hierarchy: Hierarchy, estimator: str = "data",
                  beta: float = 1.0) -> EdgeWeights:
    """Edge penalties (the weights ``w_e`` of HBCE's penalty), fitted on the training targets with
    :mod:`hierloss.edge_weights`.

    Args:
        targets: the training targets (:func:`derive_targets`); NaN entries (policy ``'ignore'``) are left out of
            the counts of every edge that touches them.
        hierarchy: the hierarchy whose edges the penalties follow.
        estimator: ``'data'`` (the paper's ``1 − P̂(child = 1 | parent = 0)``), ``'fixed'`` (β on every edge) or
            ``'beta'`` (hierloss's ``BetaWeight``: the data-driven penalty shrunk toward the pooled rate).
        beta: the fixed penalty β (``'fixed'`` only).

    Returns:
        The :class:`~hierloss.edge_weights.EdgeWeights`.

    Raises:
        ValueError: on an unknown estimator.
    """
    if estimator == "fixed":
        return FixedWeight(beta).fit(hierarchy)
    if estimator not in PENALTY_ESTIMATORS:
        raise ValueError(f"penalty estimator must be one of {PENALTY_ESTIMATORS}, got {estimator!r}")
    uncertain = "ignore" if bool(targets.isna().to_numpy().any()) else None
    fitter = ConditionalWeight() if estimator == "data" else BetaWeight()
    return fitter.fit(hierarchy, targets, uncertain=uncertain)

