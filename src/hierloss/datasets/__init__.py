"""Datasets: the HMC benchmark loader and a synthetic hierarchical multi-label generator."""

from __future__ import annotations

from hierloss.datasets.hmc import HMCData, HMCSplits, load_hmc, load_hmc_arff
from hierloss.datasets.synthetic import make_hierarchical_classification

__all__ = ["HMCData", "HMCSplits", "load_hmc", "load_hmc_arff", "make_hierarchical_classification"]
