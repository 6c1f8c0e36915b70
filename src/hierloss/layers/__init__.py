"""Layers: modules that map scores to scores, placed after a classifier head.

``MaxConstraint`` (C-HMCNN's max over descendants, an inference projection that makes predictions coherent),
``ChainRule`` (marginal probabilities from the conditional logits of a head trained with ``ConditionalBCELoss``)
and ``LabelGraphRefinement`` (a learnable label-coupling step). Their functional twins are in
:mod:`hierloss.functional`. Training objectives are in :mod:`hierloss.losses`, evaluation in
:mod:`hierloss.metrics`.

Each module declares its public names in its ``__all__``; adding a layer is its file and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierloss._exports import gather
from hierloss.layers.chain_rule import *  # noqa: F403
from hierloss.layers.label_graph import *  # noqa: F403
from hierloss.layers.max_constraint import *  # noqa: F403

if not TYPE_CHECKING:  # type checkers read the star imports above; at run time the list is gathered from them
    __all__ = gather(__name__)
