"""Built-in hierarchies: the CheXpert hierarchy of Asadi et al. (2025) and its target derivation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hierloss.hierarchy import Hierarchy

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CHEXPERT_OBSERVATIONS", "CHEXPERT_PARENTS", "chexpert", "chexpert_targets"]

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


def chexpert(uncertain: bool = True) -> Hierarchy:
    """The CheXpert hierarchy of Asadi et al. (2025).

    21 labels (20 with ``uncertain=False``): the 14 observations sorted by name, then ``'Uncertain'``, then the
    six parents sorted by name (the reference's column order). 20 edges; 'Cardiomegaly' has two parents
    ('Cardiac' and 'Enlarged Cardiomediastinum') and 'Pneumonia' two ('Fluid Accumulation' and 'Consolidation').
    'No Finding' and 'Uncertain' belong to no edge.

    Args:
        uncertain: include the 'Uncertain' label (1 when all 14 observations are 0).

    Example:
        >>> h = chexpert()
        >>> h.num_labels, h.num_edges
        (21, 20)
        >>> h.parents("Cardiomegaly")
        ('Enlarged Cardiomediastinum', 'Cardiac')
    """
    labels = [*CHEXPERT_OBSERVATIONS, *(["Uncertain"] if uncertain else []), *CHEXPERT_PARENTS]
    edges = [(parent, child) for parent, children in _CHEXPERT_CHILDREN.items() for child in children]
    return Hierarchy(labels, edges)


def chexpert_targets(frame: pd.DataFrame, uncertain: bool = True) -> pd.DataFrame:
    """Derive the paper's extra columns from a frame of 0/1 CheXpert observations, as the reference did.

    ``'Uncertain'`` = 1 when all 14 observations are 0; ``'Abnormal'`` = 1 unless 'No Finding' or 'Uncertain' is
    1 (with ``uncertain=False``: unless 'No Finding' is 1 or all observations are 0); 'Cardiac', 'Opacity',
    'Fluid Accumulation', 'Missing Lung Tissue' and 'Other' = 1 when any of their observations is 1.

    This is *not* :meth:`Hierarchy.propagate`: the observations are left as they are, so rows that violate the
    hierarchy in the data (e.g. 'No Finding' together with 'Support Devices') keep their violations, which the
    data-driven penalties exist to measure.

    Args:
        frame: a DataFrame holding the 14 observation columns (any order, other columns kept) with values 0/1.
            Apply an uncertainty policy (e.g. map CheXpert's -1 and blanks) before calling.
        uncertain: add the 'Uncertain' column.

    Returns:
        A new DataFrame: ``frame``'s columns plus the derived ones (integer 0/1), which overwrite any existing
        columns of the same name. Select ``chexpert(uncertain).labels`` to get the model's target matrix.

    Raises:
        ValueError: if an observation column is missing, or holds a value other than 0/1 (naming the column,
            the value and how many such values it holds).
    """
    missing = [name for name in CHEXPERT_OBSERVATIONS if name not in frame.columns]
    if missing:
        raise ValueError(f"chexpert_targets: missing observation columns {missing!r}")
    values = frame.loc[:, list(CHEXPERT_OBSERVATIONS)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        column_bad = bad[:, col]
        value = float(values[np.flatnonzero(column_bad)[0], col])
        raise ValueError(
            f"chexpert_targets: column {CHEXPERT_OBSERVATIONS[col]!r} holds {value!r} "
            f"({int(column_bad.sum())} values outside {{0, 1}}); apply an uncertainty policy to -1 and blank "
            "labels first"
        )
    obs = values.astype(bool)
    column = {name: obs[:, i] for i, name in enumerate(CHEXPERT_OBSERVATIONS)}
    derived: dict[str, np.ndarray] = {}
    all_zero = ~obs.any(axis=1)
    if uncertain:
        derived["Uncertain"] = all_zero
    derived["Abnormal"] = ~(column["No Finding"] | all_zero)
    for parent, children in _ANY_OF.items():
        derived[parent] = np.logical_or.reduce([column[c] for c in children])
    out = frame.copy()
    for name in (["Uncertain"] if uncertain else []) + list(CHEXPERT_PARENTS):
        out[name] = derived[name].astype(np.int64)
    result: pd.DataFrame = out
    return result
