"""Masking of ignored and missing targets, shared by every loss that accepts ``ignore_index``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["target_mask"]


def target_mask(target: Tensor, ignore_index: float | None) -> tuple[Tensor, Tensor | None]:
    """Split ``target`` into a clean 0/1 tensor and a validity mask.

    Entries equal to ``ignore_index`` and, for floating targets, NaN entries are invalid. Invalid entries are
    replaced by 0 in the returned target (so that no NaN reaches the loss or its gradient) and are 0 in the
    mask. No host synchronisation on an accelerator: there the mask is computed with element-wise ops only. On
    the CPU in eager mode, where reading a value back costs nothing extra, a float target whose sum is not NaN
    (so it holds no NaN) skips the NaN mask; the result is identical, only cheaper.

    Args:
        target: ``(N, C)`` targets.
        ignore_index: a target value to ignore (e.g. ``-1``), or ``None``.

    Returns:
        ``(clean_target, mask)`` where ``mask`` is a bool tensor of the target's shape, or ``None`` when nothing
        can be masked (integer/bool target and ``ignore_index is None``), so callers can skip masking for free.
    """
    valid: Tensor | None = None
    clean = target
    if target.is_floating_point() and not _nan_free_on_cpu(target):
        valid = target == target  # False exactly at NaN
        clean = torch.nan_to_num(target, nan=0.0)
    if ignore_index is not None:
        keep = target != ignore_index
        valid = keep if valid is None else valid & keep
        clean = clean * keep
    return clean, valid


def _nan_free_on_cpu(target: Tensor) -> bool:
    """True when ``target`` is on the CPU, eager (not traced) and holds no NaN; False means "may hold NaN".

    One vectorised sum: it is NaN whenever some entry is NaN. (It is also NaN for a target holding both +inf and
    −inf, which then takes the masked path: correct, merely slower.) Never reads a value back from an accelerator.
    """
    if target.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return not bool(torch.isnan(target.sum()))
