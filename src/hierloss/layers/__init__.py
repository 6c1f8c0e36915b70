"""Layers: modules that map scores to scores, placed after a classifier head.

``MaxConstraint`` (C-HMCNN's max over descendants, an inference projection that makes predictions coherent),
``ChainRule`` (marginal probabilities from the conditional logits of a head trained with ``ConditionalBCELoss``)
and ``LabelGraphRefinement`` (a learnable label-coupling step). Their functional twins are in
:mod:`hierloss.functional`. Training objectives are in :mod:`hierloss.losses`, evaluation in
:mod:`hierloss.metrics`.
"""

from __future__ import annotations

from hierloss.layers.chain_rule import ChainRule, chain_rule_probs
from hierloss.layers.label_graph import LabelGraphRefinement, coupling_pairs, label_graph_refinement
from hierloss.layers.max_constraint import MaxConstraint

__all__ = ["ChainRule", "LabelGraphRefinement", "MaxConstraint", "chain_rule_probs", "coupling_pairs",
           "label_graph_refinement"]
