"""The one reduction helper shared by every loss and penalty, and the meaning of ``reduction``.

A loss is either **per element** (``(N, C)`` terms: ASL, focal, MCLoss — PyTorch's convention for BCE) or **per
sample** (``(N,)`` terms, each already a mean or a sum over the labels: HBCE, ZLPR, multi-label softmax, the
hierarchy penalty). ``reduction='none'`` returns those terms; ``'sum'`` sums them; ``'mean'`` averages them — over
the valid elements for an element-wise loss with masked targets. ``docs/losses.md`` tabulates every loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["REDUCTIONS", "Reduction", "check_reduction", "reduce_loss", "reduce_valid", "reduce_valid_backward"]

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


def reduce_valid(loss: Tensor, reduction: str, valid: Tensor | None) -> Tensor:
    """:func:`reduce_loss` of per-element ``(N, C)`` terms after setting to 0 those where ``valid`` is False
    (``valid=None``: every term counts)."""
    if valid is not None:
        loss = torch.where(valid, loss, 0.0)
    return reduce_loss(loss, reduction, valid)


def reduce_valid_backward(grad: Tensor, shape: tuple[int, ...], reduction: str, valid: Tensor | None) -> Tensor:
    """The gradient of each term of :func:`reduce_valid`'s ``(N, C)`` ``loss`` given ``grad``, the gradient of its
    result (for the written backwards of fused losses): ``grad`` itself (``'none'``), ``grad`` on every term
    (``'sum'``) or divided by their number (``'mean'``); 0 where ``valid`` is False."""
    if reduction != "none":
        if reduction == "mean":
            grad = grad / (math.prod(shape) if valid is None else valid.sum().clamp_min(1))
        grad = grad.expand(shape)
    return grad if valid is None else torch.where(valid, grad, 0.0)
