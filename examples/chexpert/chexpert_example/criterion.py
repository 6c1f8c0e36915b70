"""``--loss`` names to hierloss losses (public names only)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import hierloss
import hierloss.losses
from hierloss import Hierarchy
from hierloss.penalties import EdgePenalties

__all__ = ["HBCE_MODES", "LOSSES", "MASKING_LOSSES", "PenalisedLoss", "build_criterion"]

#: ``hbce-<mode>`` → HBCELoss ``mode``. ``hbce-hard`` is the reference's loss (its gradient is BCE's).
HBCE_MODES: dict[str, str] = {
    "hbce-hard": "hard",
    "hbce-soft": "soft",
    "hbce-hinge": "hinge",
    "hbce-squared-hinge": "squared_hinge",
}
# Other multi-label losses of hierloss: --loss name → (class name in hierloss.losses, takes the hierarchy).
_OTHER: dict[str, tuple[str, bool]] = {
    "asl": ("AsymmetricLoss", False),
    "focal": ("FocalLoss", False),
    "zlpr": ("ZLPRLoss", False),
    "msml": ("MultiLabelSoftmaxLoss", False),
    "mcloss": ("MCLoss", True),
}
#: Every ``--loss`` choice.
LOSSES: tuple[str, ...] = ("bce", *HBCE_MODES, *_OTHER)
#: Losses that leave NaN targets (uncertainty policy ``'ignore'``) out: the BCE family.
MASKING_LOSSES: tuple[str, ...] = ("bce", *HBCE_MODES)


class PenalisedLoss(nn.Module):
    """``base(logits, target) + penalty(logits)``: any loss plus hierloss's ``HierarchyPenalty``."""

    def __init__(self, base: nn.Module, penalty: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.penalty = penalty

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        out: Tensor = self.base(logits, target) + self.penalty(logits)
        return out


def build_criterion(name: str, hierarchy: Hierarchy, penalties: EdgePenalties | float = 1.0, scale: float = 1.0,
                    edge_reduction: str | None = None, add_penalty: str | None = None) -> nn.Module:
    """The training loss for ``--loss name``; every returned module takes ``(logits, target)``.

    * ``bce``: ``HBCELoss`` with ``scale=0``, which hierloss defines as BCE-with-logits (mean over labels, then
      samples) and which leaves NaN targets out.
    * ``hbce-hard`` / ``hbce-soft`` / ``hbce-hinge`` / ``hbce-squared-hinge``: ``HBCELoss`` in that mode with
      ``penalties`` and ``scale`` (λ). ``hbce-hard`` is the paper's loss: it reports the penalty but its gradient
      is plain BCE's.
    * ``asl``, ``focal``, ``zlpr``, ``msml``, ``mcloss``: hierloss's other losses with their defaults,
      optionally plus ``HierarchyPenalty`` in mode ``add_penalty``.

    Args:
        name: one of :data:`LOSSES`.
        hierarchy: the label hierarchy.
        penalties: the edge penalties (an ``EdgePenalties`` or a fixed β).
        scale: λ, multiplies every penalty.
        edge_reduction: ``'sum'`` / ``'mean'`` of the penalty over edges (``None``: hierloss's default for the
            mode; ``'sum'`` for ``'hard'`` as in the reference).
        add_penalty: for the non-BCE losses, a ``HierarchyPenalty`` mode to add (``None``: none).

    Raises:
        ValueError: on an unknown name, or ``add_penalty`` with a BCE-family loss.
        RuntimeError: when the installed hierloss lacks the requested loss.
    """
    if name not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {name!r}")
    if name in MASKING_LOSSES:
        if add_penalty is not None:
            raise ValueError(f"--add-penalty applies to {tuple(_OTHER)}; {name!r} has its penalty built in")
        if name == "bce":
            return hierloss.HBCELoss(hierarchy, penalties=0.0, scale=0.0)
        return hierloss.HBCELoss(hierarchy, penalties=penalties, scale=scale, mode=HBCE_MODES[name],
                                 edge_reduction=edge_reduction)
    class_name, takes_hierarchy = _OTHER[name]
    loss_class: Any = getattr(hierloss.losses, class_name, None)
    if loss_class is None:
        raise RuntimeError(f"--loss {name}: this hierloss ({hierloss.__version__}) has no "
                           f"hierloss.losses.{class_name}")
    base: nn.Module = loss_class(hierarchy) if takes_hierarchy else loss_class()
    if add_penalty is None:
        return base
    penalty = hierloss.HierarchyPenalty(hierarchy, penalties=penalties, scale=scale, mode=add_penalty,
                                        edge_reduction=edge_reduction)
    return PenalisedLoss(base, penalty)
