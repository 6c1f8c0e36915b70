"""Shared pieces of the element-wise losses (ASL, focal, MCLoss): input checks and the masked reduction."""

from __future__ import annotations

from torch import Tensor

from hierloss._reduction import check_reduction

__all__ = ["check_pair", "reduce_elements"]


def check_pair(input: Tensor, target: Tensor) -> None:
    """Raise ``ValueError`` unless ``input`` is ``(N, C)`` and ``target`` has the same shape."""
    if input.ndim != 2:
        raise ValueError(f"Expected `input` of shape (N, C), got {tuple(input.shape)}")
    if target.shape != input.shape:
        raise ValueError(f"Expected `target` of shape {tuple(input.shape)} like `input`, got {tuple(target.shape)}")


def reduce_elements(loss: Tensor, valid: Tensor | None, reduction: str) -> Tensor:
    """Reduce an ``(N, C)`` element-wise loss whose masked entries are already 0.

    ``'mean'`` divides the sum by the number of valid elements (``N·C`` when nothing is masked, as PyTorch's
    element-wise losses); ``'sum'`` sums; ``'none'`` returns ``loss``. No host synchronisation.
    """
    reduction = check_reduction(reduction)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if valid is None:
        return loss.mean()
    return loss.sum() / valid.sum().clamp_min(1)
