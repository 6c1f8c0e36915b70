"""Datasets: the HMC benchmark loader."""

from __future__ import annotations

from hierloss.datasets.hmc import HMCData, HMCSplits, load_hmc, load_hmc_arff

__all__ = ["HMCData", "HMCSplits", "load_hmc", "load_hmc_arff"]
