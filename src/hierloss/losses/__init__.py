"""Losses: training objectives. Each is a thin ``nn.Module`` whose ``forward`` calls its twin in
:mod:`hierloss.functional`.

Layers that map scores to scores (``MaxConstraint``, ``ChainRule``, ``LabelGraphRefinement``) are in
:mod:`hierloss.layers`. Each module declares its public names in its ``__all__``; this package, the functional forms
(:mod:`hierloss.functional`) and the top-level names (``hierloss.HBCELoss``) take them from there: adding a loss is
its file and its line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierloss._exports import gather
from hierloss.losses._hbce_backend import hbce_backend as hbce_backend
from hierloss.losses.asymmetric import *  # noqa: F403
from hierloss.losses.conditional import *  # noqa: F403
from hierloss.losses.focal import *  # noqa: F403
from hierloss.losses.hbce import *  # noqa: F403
from hierloss.losses.hierarchy_penalty import *  # noqa: F403
from hierloss.losses.max_constraint import *  # noqa: F403
from hierloss.losses.multilabel_softmax import *  # noqa: F403
from hierloss.losses.zlpr import *  # noqa: F403

if not TYPE_CHECKING:  # type checkers read the star imports above; at run time the list is gathered from them
    __all__ = gather(__name__, "hbce_backend")
