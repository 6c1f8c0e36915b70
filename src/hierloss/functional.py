"""Functional forms of every loss, penalty and layer (``hierloss.functional.hbce_loss`` etc.).

Each function here has a module twin — in :mod:`hierloss.losses` for a loss, in :mod:`hierloss.layers` for a
layer — whose ``forward`` is one call to the function. A function that needs the hierarchy takes the
:class:`~hierloss.Hierarchy` itself and builds its index tensors on each call; the modules keep them in buffers.

``max_over_descendants`` is the one implementation of the max over self and descendants: ``MaxConstraint`` is
its module form, ``hierloss.metrics.coherent(preds, hierarchy, 'max')`` applies it to any array of scores, and
``Hierarchy.propagate`` applies it to 0/1 labels (the true-path rule).
"""

from __future__ import annotations

from hierloss.layers.chain_rule import chain_rule_probs
from hierloss.layers.label_graph import label_graph_refinement
from hierloss.losses.asymmetric import asymmetric_loss
from hierloss.losses.conditional import chain_rule_bce_loss, conditional_bce_loss
from hierloss.losses.focal import focal_loss
from hierloss.losses.hbce import hbce_loss
from hierloss.losses.hierarchy_penalty import hierarchy_penalty
from hierloss.losses.max_constraint import mc_loss
from hierloss.losses.multilabel_softmax import multilabel_softmax_loss
from hierloss.losses.zlpr import zlpr_loss
from hierloss.propagation import max_over_descendants, min_over_ancestors

__all__ = [
    "asymmetric_loss",
    "chain_rule_bce_loss",
    "chain_rule_probs",
    "conditional_bce_loss",
    "focal_loss",
    "hbce_loss",
    "hierarchy_penalty",
    "label_graph_refinement",
    "max_over_descendants",
    "mc_loss",
    "min_over_ancestors",
    "multilabel_softmax_loss",
    "zlpr_loss",
]
