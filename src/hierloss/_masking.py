"""Masking of ignored and missing targets, shared by every loss that accepts ``ignore_index``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nan_free_on_cpu", "on_eager_cpu", "target_mask"]


def target_mask(target: Tensor, ignore_index: float | None,
                nan_shortcut: bool = True) -> tuple[Tensor, Tensor | None]:
    """Split ``target`` into a clean 0/1 tensor and a bool validity mask.

    Entries equal to ``ignore_index`` and, for floating targets, NaN entries are invalid. Invalid entries are
    replaced by 0 in the returned target (so that no NaN reaches the loss or its gradient) and are ``False`` in
    the mask. On an accelerator the mask is computed with element-wise ops only (no host synchronisation).

    Args:
        target: ``(N, C)`` targets.
        ignore_index: a target value to ignore (e.g. ``-1``), or ``None``.
        nan_shortcut: on the CPU in eager mode, where reading a value back costs nothing extra, skip the NaN mask
            of a float target whose sum is not NaN (:func:`nan_free_on_cpu`): identical results, only cheaper.
            ``False`` always computes the mask element-wise, as on an accelerator.

    Returns:
        ``(clean_target, mask)``, where ``mask`` is ``None`` when nothing can be masked (an integer or bool target
        and ``ignore_index is None``, or a NaN-free float target found by the shortcut), so callers can skip
        masking for free.
    """
    valid: Tensor | None = None
    clean = target
    if target.is_floating_point() and not (nan_shortcut and nan_free_on_cpu(target)):
        valid = target == target  # False exactly at NaN
        clean = torch.nan_to_num(target, nan=0.0)
    if ignore_index is not None:
        keep = target != ignore_index
        valid = keep if valid is None else valid & keep
        clean = clean * keep
    return clean, valid


def on_eager_cpu(tensor: Tensor) -> bool:
    """True when ``tensor`` is on the CPU, not traced by ``torch.compile`` and not transformed by ``torch.func``
    (``grad``, ``jvp``, ``vmap``): where the CPU-only shortcuts that read a value back apply."""
    return (tensor.device.type == "cpu" and not torch.compiler.is_compiling()
            and not torch._C._functorch.is_functorch_wrapped_tensor(tensor))


def nan_free_on_cpu(target: Tensor) -> bool:
    """True when ``target`` is on the CPU, eager (not traced) and holds no NaN; False means "may hold NaN".

    One vectorised sum: it is NaN whenever some entry is NaN. (It is also NaN for a target holding both +inf and
    −inf, which then takes the masked path: correct, merely slower.) Never reads a value back from an accelerator.
    """
    if not on_eager_cpu(target):
        return False
    return not bool(torch.isnan(target.sum()))
