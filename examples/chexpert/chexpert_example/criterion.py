"""``--loss`` names to hierloss losses (public names only)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

import hierloss
import hierloss.losses
from hierloss import Hierarchy
from hierloss.edge_weights import EdgeWeights

__all__ = ["BCE_FAMILY", "HBCE_MODES", "LOSSES", "ChainRuleOnProbabilities", "PenalisedLoss", "available_losses",
           "build_criterion", "prediction_transform"]

#: ``hbce-<mode>`` → ``HBCELoss`` ``mode``; ``hbce`` is the library's default mode (``None``: whatever
#: ``hierloss.HBCELoss`` defaults to: ``'logit_hinge'``). ``hbce-hard`` is the reference's loss: its penalty adds to
#: the loss value but has zero gradient, so it trains exactly like ``bce``.
HBCE_MODES: dict[str, str | None] = {
    "hbce": None,
    "hbce-hard": "hard",
    "hbce-soft": "soft",
    "hbce-hinge": "hinge",
    "hbce-squared-hinge": "squared_hinge",
    "hbce-logit-hinge": "logit_hinge",
}
# Other multi-label losses of hierloss: --loss name → class name, looked up in ``hierloss`` then
# ``hierloss.losses`` when the loss is built (so the example follows the library as losses are added).
_OTHER: dict[str, str] = {
    "asl": "AsymmetricLoss",
    "focal": "FocalLoss",
    "zlpr": "ZLPRLoss",
    "msml": "MultiLabelSoftmaxLoss",
    "mcloss": "MCLoss",
    "conditional": "ConditionalBCELoss",
    "chain-rule-bce": "ChainRuleBCELoss",
}
#: Every ``--loss`` choice.
LOSSES: tuple[str, ...] = ("bce", *HBCE_MODES, *_OTHER)
#: The BCE family: ``HBCELoss`` with its penalty built in (``--add-penalty`` is for the others). Every loss here
#: leaves NaN targets (uncertainty policy ``'ignore'``) out.
BCE_FAMILY: tuple[str, ...] = ("bce", *HBCE_MODES)


def _loss_class(name: str) -> Any:
    """The hierloss class behind ``--loss name`` (``None`` when this hierloss lacks it)."""
    class_name = _OTHER[name]
    found = getattr(hierloss, class_name, None)
    return found if found is not None else getattr(hierloss.losses, class_name, None)


def available_losses() -> tuple[str, ...]:
    """The ``--loss`` choices the installed hierloss can build."""
    return tuple(name for name in LOSSES if name not in _OTHER or _loss_class(name) is not None)


class PenalisedLoss(nn.Module):
    """``base(logits, target) + penalty(logits)``: any loss plus hierloss's ``HierarchyPenalty``."""

    def __init__(self, base: nn.Module, penalty: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.penalty = penalty

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        out: Tensor = self.base(logits, target) + self.penalty(logits)
        return out


def build_criterion(name: str, hierarchy: Hierarchy, penalties: EdgeWeights | float = 1.0,
                    scale: float | None = None, edge_reduction: str | None = None,
                    add_penalty: str | None = None) -> nn.Module:
    """The training loss for ``--loss name``; every returned module takes ``(logits, target)``.

    * ``bce``: ``HBCELoss`` with ``scale=0``, which hierloss defines as BCE-with-logits (mean over labels, then
      samples) and which leaves NaN targets out.
    * ``hbce`` (the library's default mode), ``hbce-hard``, ``hbce-soft``, ``hbce-hinge``,
      ``hbce-squared-hinge``, ``hbce-logit-hinge``: ``HBCELoss`` in that mode with ``penalties`` and ``scale``
      (λ). ``hbce-hard`` is the paper's loss: it reports the penalty but its gradient is plain BCE's.
    * ``asl``, ``focal``, ``zlpr``, ``msml``, ``mcloss``, ``conditional``: hierloss's other losses with their
      defaults (given the hierarchy when their constructor takes one), optionally plus ``HierarchyPenalty`` in mode
      ``add_penalty``. ``conditional`` is conditional (chain-rule) training (``ConditionalBCELoss``);
      ``chain-rule-bce`` is BCE on the chain rule's marginals (``ChainRuleBCELoss``), the fine-tuning stage that
      follows it (start it from the conditional run's checkpoint with ``--init-from``).

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
        RuntimeError: when the installed hierloss lacks the requested loss.
    """
    if name not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {name!r}")
    if name in BCE_FAMILY:
        if add_penalty is not None:
            raise ValueError(f"--add-penalty applies to {tuple(_OTHER)}; {name!r} has its penalty built in")
        if name == "bce":
            return hierloss.HBCELoss(hierarchy, edge_weight=0.0, scale=0.0)
        mode = HBCE_MODES[name]
        mode_arg = {} if mode is None else {"mode": mode}
        return hierloss.HBCELoss(hierarchy, edge_weight=penalties, scale=scale, edge_reduction=edge_reduction,
                                 **mode_arg)
    loss_class = _loss_class(name)
    if loss_class is None:
        raise RuntimeError(f"--loss {name}: this hierloss ({hierloss.__version__}) has no {_OTHER[name]}")
    takes_hierarchy = "hierarchy" in inspect.signature(loss_class).parameters
    base: nn.Module = loss_class(hierarchy) if takes_hierarchy else loss_class()
    if add_penalty is None:
        return base
    penalty = hierloss.HierarchyPenalty(hierarchy, edge_weight=penalties, scale=scale, mode=add_penalty,
                                        edge_reduction=edge_reduction)
    return PenalisedLoss(base, penalty)


class ChainRuleOnProbabilities(nn.Module):
    """hierloss's ``ChainRule`` applied to sigmoid outputs: the marginals of conditional training."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__()
        self.chain_rule = hierloss.ChainRule(hierarchy)

    def forward(self, probs: Tensor) -> Tensor:
        out: Tensor = self.chain_rule(torch.logit(probs))
        return out


def prediction_transform(name: str, hierarchy: Hierarchy) -> nn.Module | None:
    """What turns sigmoid outputs into predictions for ``--loss name``: ``MaxConstraint`` for ``mcloss`` (C-HMCNN
    predicts through its max-constraint module), the chain rule for ``conditional`` and ``chain-rule-bce`` (the
    outputs are conditional probabilities), ``None`` (the probabilities as they are) otherwise."""
    if name in ("conditional", "chain-rule-bce"):
        return ChainRuleOnProbabilities(hierarchy)
    if name != "mcloss":
        return None
    constraint: Any = getattr(hierloss, "MaxConstraint", None) or getattr(hierloss.losses, "MaxConstraint", None)
    if constraint is None:
        raise RuntimeError(f"--loss mcloss: this hierloss ({hierloss.__version__}) has no MaxConstraint")
    module: nn.Module = constraint(hierarchy)
    return module
