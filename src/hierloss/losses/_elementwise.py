"""The input check shared by the element-wise losses (ASL, focal, MCLoss)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_pair"]


def check_pair(input: Tensor, target: Tensor) -> None:
    """Raise ``ValueError`` unless ``input`` is ``(N, C)`` and ``target`` has the same shape."""
    if input.ndim != 2:
        raise ValueError(f"Expected `input` of shape (N, C), got {tuple(input.shape)}")
    if target.shape != input.shape:
        raise ValueError(f"Expected `target` of shape {tuple(input.shape)} like `input`, got {tuple(target.shape)}")
