"""The one reduction helper shared by every loss and penalty."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["REDUCTIONS", "Reduction", "check_reduction", "reduce_samples"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def check_reduction(reduction: str) -> Reduction:
    """Return ``reduction`` if it is one of ``'mean'``, ``'sum'``, ``'none'``; else raise ``ValueError``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def reduce_samples(per_sample: Tensor, reduction: str) -> Tensor:
    """Reduce a per-sample (or per-element) loss tensor: mean, sum, or return it unchanged for ``'none'``."""
    reduction = check_reduction(reduction)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
