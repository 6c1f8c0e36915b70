"""Functional forms of every loss, penalty and layer (``hierloss.functional.hbce_loss`` etc.).

Each function here has a module twin — in :mod:`hierloss.losses` for a loss, in :mod:`hierloss.layers` for a
layer — whose ``forward`` is one call to the function. A function that needs the hierarchy takes the
:class:`~hierloss.Hierarchy` itself and builds its index tensors on each call; the modules keep them in buffers.

``max_over_descendants`` is the one implementation of the max over self and descendants: ``MaxConstraint`` is
its module form, ``hierloss.metrics.coherent(preds, hierarchy, 'max')`` applies it to any array of scores, and
``Hierarchy.propagate`` applies it to 0/1 labels (the true-path rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierloss import layers as _layers
from hierloss import losses as _losses
from hierloss.layers import *  # noqa: F403
from hierloss.losses import *  # noqa: F403
from hierloss.propagation import max_over_descendants as max_over_descendants
from hierloss.propagation import min_over_ancestors as min_over_ancestors

#: Public functions of the losses and layers that are not the twin of a module.
_NOT_TWINS = frozenset({"hbce_backend", "coupling_pairs"})


def _twins() -> list[str]:
    """The functions of :mod:`hierloss.losses` and :mod:`hierloss.layers` (each the twin of a module), then the
    engine's two functional forms."""
    public = [*vars(_losses)["__all__"], *vars(_layers)["__all__"]]
    names = [name for name in public if name[0].islower() and name not in _NOT_TWINS]
    return [*names, "max_over_descendants", "min_over_ancestors"]


if not TYPE_CHECKING:  # type checkers read the star imports above; at run time only the twins are listed
    __all__ = _twins()
