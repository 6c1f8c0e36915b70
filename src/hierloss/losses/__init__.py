"""Losses: training objectives. Each is a thin ``nn.Module`` whose ``forward`` calls its twin in
:mod:`hierloss.functional`.

Layers that map scores to scores (``MaxConstraint``, ``LabelGraphRefinement``) are in :mod:`hierloss.layers`.
"""

from __future__ import annotations

from hierloss.losses._hbce_backend import hbce_backend
from hierloss.losses.asymmetric import AsymmetricLoss, asymmetric_loss
from hierloss.losses.conditional import ChainRuleBCELoss, ConditionalBCELoss, chain_rule_bce_loss, conditional_bce_loss
from hierloss.losses.focal import FocalLoss, focal_loss
from hierloss.losses.hbce import HBCELoss, hbce_loss
from hierloss.losses.hierarchy_penalty import HierarchyPenalty, hierarchy_penalty
from hierloss.losses.max_constraint import MCLoss, mc_loss
from hierloss.losses.multilabel_softmax import MultiLabelSoftmaxLoss, multilabel_softmax_loss
from hierloss.losses.zlpr import ZLPRLoss, zlpr_loss

__all__ = [
    "AsymmetricLoss",
    "ChainRuleBCELoss",
    "ConditionalBCELoss",
    "FocalLoss",
    "HBCELoss",
    "HierarchyPenalty",
    "MCLoss",
    "MultiLabelSoftmaxLoss",
    "ZLPRLoss",
    "asymmetric_loss",
    "chain_rule_bce_loss",
    "conditional_bce_loss",
    "focal_loss",
    "hbce_backend",
    "hbce_loss",
    "hierarchy_penalty",
    "mc_loss",
    "multilabel_softmax_loss",
    "zlpr_loss",
]
