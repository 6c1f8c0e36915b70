"""Functional forms of every hierloss loss and penalty (``hierloss.functional.hbce_loss`` etc.).

Each function here has a module twin in :mod:`hierloss.losses` whose ``forward`` is one call to the function.
"""

from __future__ import annotations

from hierloss.losses.asymmetric import asymmetric_loss
from hierloss.losses.focal import focal_loss
from hierloss.losses.hbce import hbce_loss
from hierloss.losses.hierarchy_penalty import hierarchy_penalty
from hierloss.losses.label_graph import label_graph_refinement
from hierloss.losses.max_constraint import mc_loss
from hierloss.losses.multilabel_softmax import multilabel_softmax_loss
from hierloss.losses.zlpr import zlpr_loss
from hierloss.propagation import max_over_descendants, min_over_ancestors

__all__ = [
    "asymmetric_loss",
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
