"""Functional forms of every hierloss loss and penalty (``hierloss.functional.hbce_loss`` etc.).

Each function here has a module twin in :mod:`hierloss.losses` whose ``forward`` is one call to the function.
"""

from __future__ import annotations

from hierloss.losses.hbce import hbce_loss
from hierloss.losses.hierarchy_penalty import hierarchy_penalty
from hierloss.propagation import max_over_descendants, min_over_ancestors

__all__ = [
    "hbce_loss",
    "hierarchy_penalty",
    "max_over_descendants",
    "min_over_ancestors",
]
