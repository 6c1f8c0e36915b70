"""Loss modules: each is a thin ``nn.Module`` whose ``forward`` calls its twin in :mod:`hierloss.functional`."""

from __future__ import annotations

from hierloss.losses.hbce import HBCELoss, hbce_loss
from hierloss.losses.hierarchy_penalty import HierarchyPenalty, hierarchy_penalty

__all__ = ["HBCELoss", "HierarchyPenalty", "hbce_loss", "hierarchy_penalty"]
