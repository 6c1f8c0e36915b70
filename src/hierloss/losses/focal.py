"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), multi-label form.

Per element, with ``p = σ(x)`` and ``p_t = p`` for positives, ``1 − p`` for negatives::

    ℓ = α_t · (1 − p_t)^γ · BCE(x, y),   α_t = α·y + (1 − α)·(1 − y)

as in ``torchvision.ops.sigmoid_focal_loss``. ``1 − p_t`` is computed as ``y·σ(−x) + (1 − y)·σ(x)``, which is
the same number without the cancellation of ``1 − p_t`` near ``p_t = 1``. With ``γ = 0`` and ``alpha=None`` the
loss is ``binary_cross_entropy_with_logits`` exactly.

In eager mode a fused kernel (:mod:`hierloss.losses._elementwise`) computes the terms and their derivative in one
sweep; under ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``, ``hessian``), forward-mode AD and
``torch.compile`` the plain formula (``_reference_terms``) runs, so every transform applies, per-sample gradients
included.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hierloss._reduction import check_reduction, reduce_loss
from hierloss.losses._elementwise import focal_kernel, fused_loss, prepare_target, use_fused
from hierloss.losses._prelude import prelude

__all__ = ["FocalLoss", "focal_loss"]


def _check_args(alpha: float | None, gamma: float) -> None:
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be in [0, 1] or None, got {alpha!r}")
    if not 0 <= gamma < math.inf:  # comparisons: NaN and inf fail them
        raise ValueError(f"`gamma` must be a finite number >= 0, got {gamma!r}")


def focal_loss(
    input: Tensor,
    target: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """Sigmoid focal loss of logits ``input`` against 0/1 (or soft) ``target``.

    Args:
        input: ``(N, C)`` logits.
        target: ``(N, C)`` targets in ``[0, 1]``; NaN and ``ignore_index`` entries are left out.
        alpha: weight of positives (negatives get ``1 − alpha``); ``None`` disables the weighting.
        gamma: focusing exponent; ``0`` gives (α-weighted) BCE.
        reduction: ``'mean'`` over the valid elements (``N·C`` when nothing is masked, as PyTorch), ``'sum'``, or
            ``'none'`` for the ``(N, C)`` losses (0 at masked entries).
        ignore_index: a target value (e.g. ``-1``) to leave out.
        validate_args: check that every target is in ``[0, 1]``, NaN or ``ignore_index`` and raise a
            ``ValueError`` naming the first offending column and value otherwise (default). This reads a value
            back, a device synchronisation on a GPU; ``False`` checks no value and never synchronises. A target
            batched by ``torch.func.vmap`` (per-sample gradients) cannot be read back: its values are not checked
            there, as under ``torch.compile``; check the batch once outside the transform if needed.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> x, y = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
        >>> torch.equal(focal_loss(x, y, alpha=None, gamma=0.0), F.binary_cross_entropy_with_logits(x, y))
        True
    """
    _check_args(alpha, gamma)
    with prelude(input, target, reduction) as x:
        y, valid, _ = prepare_target(target, ignore_index, validate_args, x.dtype, detect_zero_one=False)
        if gamma == 0 and alpha is None and valid is None:  # exactly PyTorch's BCE, which is also its fastest form
            return F.binary_cross_entropy_with_logits(x, y, reduction=reduction)
        reference = functools.partial(_reference_terms, y=y, valid=valid, alpha=alpha, gamma=gamma)
        if use_fused(x, target) and (gamma != 0 or alpha is not None):
            kernel = functools.partial(focal_kernel, alpha=alpha, gamma=gamma)
            return fused_loss(kernel, reference, x, y, valid, per_sample=False, reduction=reduction)
        return reduce_loss(reference(x), reduction, valid)


def _reference_terms(x: Tensor, y: Tensor, valid: Tensor | None, alpha: float | None, gamma: float) -> Tensor:
    """The ``(N, C)`` element-wise losses in plain PyTorch (the formula of the module docstring).

    The reference the fused kernel is tested against; it also runs under ``torch.func`` transforms, forward-mode AD
    and ``torch.compile`` (see :func:`hierloss.losses._elementwise.use_fused`). ``y`` is the clean float target,
    ``valid`` the mask of left-out entries (``None``: none).
    """
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    if gamma != 0:
        one_minus_pt = y * torch.sigmoid(-x) + (1 - y) * torch.sigmoid(x)
        loss = loss * torch.pow(one_minus_pt, gamma)
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    if valid is not None:
        loss = torch.where(valid, loss, 0.0)
    return loss


class FocalLoss(nn.Module):
    """Sigmoid focal loss for multi-label classification (Lin et al., ICCV 2017); ``loss(logits, target)``.

    See :func:`focal_loss` for the formula and every argument.

    Args:
        alpha: weight of positives, ``1 − alpha`` for negatives (default 0.25, as torchvision); ``None``: none.
        gamma: focusing exponent (default 2).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'``.
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values (see the functional form; not under ``vmap``); ``False`` never
            synchronises.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import FocalLoss
        >>> logits = torch.randn(8, 5, requires_grad=True)
        >>> FocalLoss()(logits, torch.randint(0, 2, (8, 5))).backward()
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "mean",
                 ignore_index: float | None = None, validate_args: bool = True) -> None:
        super().__init__()
        _check_args(alpha, gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits) against ``target`` (``(N, C)``)."""
        return focal_loss(input, target, self.alpha, self.gamma, self.reduction, self.ignore_index,
                          self.validate_args)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"
