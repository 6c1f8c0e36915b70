"""The one reduction helper shared by every loss and penalty, and the meaning of ``reduction``.

A loss is either **per element** (``(N, C)`` terms: ASL, focal, MCLoss — PyTorch's convention for BCE) or **per
sample** (``(N,)`` terms, each already a mean or a sum over the labels: HBCE, ZLPR, multi-label softmax, the
hierarchy penalty). ``reduction='none'`` returns those terms; ``'sum'`` sums them; ``'mean'`` averages them — over
the valid elements for an element-wise loss with masked targets. ``docs/losses.md`` tabulates every loss.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["REDUCTIONS", "Reduction", "check_reduction", "reduce_loss"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def check_reduction(reduction: str) -> Reduction:
    """Return ``reduction`` if it is one of ``'mean'``, ``'sum'``, ``'none'``; else raise ``ValueError``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def reduce_loss(loss: Tensor, reduction: str, valid: Tensor | None = None) -> Tensor:
    """Reduce a loss's per-sample ``(N,)`` or per-element ``(N, C)`` terms.

    ``'none'`` returns ``loss``; ``'sum'`` its sum; ``'mean'`` its mean, or, with a ``valid`` mask of ``loss``'s shape
    (masked entries of ``loss`` already 0), the sum divided by the number of valid entries (at least 1). No host
    synchronisation.
    """
    reduction = check_reduction(reduction)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if valid is None:
        return loss.mean()
    return loss.sum() / valid.sum().clamp_min(1)
