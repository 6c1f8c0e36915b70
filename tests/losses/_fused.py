"""Test helper for the fused label-wise kernels (hierloss.losses._elementwise): run a kernel and its reference on
the same input and return both values and both gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from hierloss.losses._elementwise import fused_loss


def fused_and_reference_of(kernel: Callable[..., Any], reference: Callable[[torch.Tensor], torch.Tensor],
                           x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None, *, per_sample: bool,
                           host: bool | None) -> tuple[torch.Tensor, ...]:
    """The terms (per element, or per sample with ``per_sample``) and the gradient of their sum, by the fused
    ``kernel`` and by autograd on ``reference``: ``(fused, ref, g_fused, g_ref)``."""
    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = fused_loss(kernel, reference, xf, y, valid, per_sample=per_sample, reduction="none", host=host)
    ref = reference(xr)
    (g_fused,) = torch.autograd.grad(fused.sum(), xf)
    (g_ref,) = torch.autograd.grad(ref.sum(), xr)
    return fused.detach(), ref.detach(), g_fused, g_ref
