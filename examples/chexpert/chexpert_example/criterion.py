"""``--loss`` names to hierloss losses and prediction heads, built from :mod:`hierloss.recipes` (public names only)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import hierloss
from hierloss import Hierarchy, recipes
from hierloss.edge_weights import EdgeWeights
from hierloss.recipes import PenalisedLoss

__all__ = ["BCE_FAMILY", "FINE_TUNING", "HBCE_MODES", "LOSSES", "OTHER_LOSSES", "HeadOnProbabilities",
           "PenalisedLoss", "build_criterion", "prediction_transform"]

#: ``hbce-<mode>`` → ``HBCELoss`` ``mode``, configured by the paper's flags (``--penalty``, ``--scale``,
#: ``--edge-reduction``); ``hbce`` is the library's default mode (``None``: whatever ``hierloss.HBCELoss`` defaults
#: to: ``'logit_hinge'``). ``hbce-hard`` is the reference's loss: its penalty adds to the loss value but has zero
#: gradient, so it trains exactly like ``bce``. These are one loss's modes, not recipes: recipes ``hbce``,
#: ``hbce-hard`` and ``hbce-hinge`` are three of them with the library's defaults.
HBCE_MODES: dict[str, str | None] = {
    "hbce": None,
    "hbce-hard": "hard",
    "hbce-soft": "soft",
    "hbce-hinge": "hinge",
    "hbce-squared-hinge": "squared_hinge",
    "hbce-logit-hinge": "logit_hinge",
}
#: The BCE family: ``HBCELoss`` with its penalty built in (``--add-penalty`` is for the others). Every loss here
#: leaves NaN targets (uncertainty policy ``'ignore'``) out.
BCE_FAMILY: tuple[str, ...] = ("bce", *HBCE_MODES)
#: The recipes of :mod:`hierloss.recipes` the example trains in one run, each with the recipe's criterion and head:
#: those of one stage outside the BCE family, and not a composition (``NAME+...``: ``bce+penalty`` is the BCE
#: family's penalty here, ``NAME+coherent`` a head).
OTHER_LOSSES: tuple[str, ...] = tuple(name for name in recipes.names() if name not in BCE_FAMILY and "+" not in name
                                      and len(recipes.spec(name).stages) == 1)
#: ``--loss chain-rule-bce``: the fine-tuning stage of recipe ``conditional-ft`` (its last stage) as a run of its own,
#: started from a ``--loss conditional`` checkpoint with ``--init-from``.
FINE_TUNING = "chain-rule-bce"
#: Every ``--loss`` choice.
LOSSES: tuple[str, ...] = (*BCE_FAMILY, *OTHER_LOSSES, FINE_TUNING)


def _recipe(name: str) -> str:
    """The recipe whose criterion and head ``--loss name`` uses (the BCE family: HBCE's, the sigmoid)."""
    if name == FINE_TUNING:
        return "conditional-ft"
    return name if name in OTHER_LOSSES else "hbce"


def build_criterion(name: str, hierarchy: Hierarchy, penalties: EdgeWeights | float = 1.0,
                    scale: float | None = None, edge_reduction: str | None = None,
                    add_penalty: str | None = None) -> nn.Module:
    """The training loss for ``--loss name``; every returned module takes ``(logits, target)``.

    * ``bce``: ``HBCELoss`` with ``scale=0``, which hierloss defines as BCE-with-logits (mean over labels, then
      samples) and which leaves NaN targets out.
    * ``hbce`` (the library's default mode), ``hbce-hard``, ``hbce-soft``, ``hbce-hinge``,
      ``hbce-squared-hinge``, ``hbce-logit-hinge``: ``HBCELoss`` in that mode with ``penalties`` and ``scale``
      (λ). ``hbce-hard`` is the paper's loss: it reports the penalty but its gradient is plain BCE's.
    * :data:`OTHER_LOSSES` (``mcloss``, ``conditional``, ``asl``, ``focal``, ``zlpr``, ``msml``): the criterion of
      the recipe of that name (:func:`hierloss.recipes.get`), optionally plus ``HierarchyPenalty`` in mode
      ``add_penalty``. ``conditional`` is conditional (chain-rule) training (``ConditionalBCELoss``);
      ``chain-rule-bce`` is the last stage of recipe ``conditional-ft``, BCE on the chain rule's marginals
      (``ChainRuleBCELoss``), the fine-tuning that follows it (start it from the conditional run's checkpoint with
      ``--init-from``).

    Args:
        name: one of :data:`LOSSES`.
        hierarchy: the label hierarchy.
        penalties: the edge weights, HBCE's ``edge_weight`` (an ``EdgeWeights`` or a fixed β).
        scale: λ, multiplies every penalty (``None``: hierloss's default for the mode, 0.1 for ``'logit_hinge'``
            and 1.0 for the others).
        edge_reduction: ``'sum'`` / ``'mean'`` of the penalty over edges (``None``: hierloss's default for the
            mode; ``'sum'`` for ``'hard'`` as in the reference).
        add_penalty: for the non-BCE losses, a ``HierarchyPenalty`` mode to add (``None``: none).

    Raises:
        ValueError: on an unknown name, or ``add_penalty`` with a BCE-family loss.
    """
    if name not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {name!r}")
    if name in BCE_FAMILY:
        if add_penalty is not None:
            raise ValueError(f"--add-penalty applies to {(*OTHER_LOSSES, FINE_TUNING)}; {name!r} has its penalty "
                             "built in")
        if name == "bce":
            return hierloss.HBCELoss(hierarchy, edge_weight=0.0, scale=0.0)
        mode = HBCE_MODES[name]
        mode_arg = {} if mode is None else {"mode": mode}
        return hierloss.HBCELoss(hierarchy, edge_weight=penalties, scale=scale, edge_reduction=edge_reduction,
                                 **mode_arg)
    base: nn.Module = recipes.get(_recipe(name), hierarchy).stages[-1]
    if add_penalty is None:
        return base
    penalty = hierloss.HierarchyPenalty(hierarchy, edge_weight=penalties, scale=scale, mode=add_penalty,
                                        edge_reduction=edge_reduction)
    return PenalisedLoss(base, penalty)


class HeadOnProbabilities(nn.Module):
    """A recipe's prediction head applied to sigmoid outputs: ``head(logit(probs))`` (the example's evaluation
    computes the probabilities first)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, probs: Tensor) -> Tensor:
        out: Tensor = self.head(torch.logit(probs))
        return out


def prediction_transform(name: str, hierarchy: Hierarchy) -> nn.Module | None:
    """What turns sigmoid outputs into predictions for ``--loss name``: the head of its recipe
    (:mod:`hierloss.recipes`) — ``MaxConstraint`` for ``mcloss`` (C-HMCNN predicts through its max-constraint
    module), the chain rule for ``conditional`` and ``chain-rule-bce`` (the outputs are conditional
    probabilities) — or ``None`` (the probabilities as they are) where that head is the sigmoid."""
    if name not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {name!r}")
    recipe = recipes.get(_recipe(name), hierarchy)
    return None if recipe.spec.head == "sigmoid" else HeadOnProbabilities(recipe.head)
