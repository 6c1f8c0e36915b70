"""Datasets: the HMC benchmark loader, a synthetic hierarchical multi-label generator, and CheXpert's hierarchy and
target derivation."""

from __future__ import annotations

from hierloss.datasets.chexpert import (
    CHEXPERT_OBSERVATIONS,
    CHEXPERT_PARENTS,
    CHEXPERT_POLICIES,
    chexpert_hierarchy,
    chexpert_targets,
)
from hierloss.datasets.hmc import HMCData, HMCSplits, load_hmc, load_hmc_arff
from hierloss.datasets.synthetic import make_hierarchical_classification

__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "CHEXPERT_PARENTS",
    "CHEXPERT_POLICIES",
    "HMCData",
    "HMCSplits",
    "chexpert_hierarchy",
    "chexpert_targets",
    "load_hmc",
    "load_hmc_arff",
    "make_hierarchical_classification",
]
