"""Asymmetric loss (ASL; Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021).

Per element, with ``p = σ(x)`` and the shifted probability ``p_m = max(p − clip, 0)``::

    ℓ = −[ y · (1 − p)^γ+ · log(max(p, eps))  +  (1 − y) · p_m^γ− · log(max(1 − p_m, eps)) ]

Negatives are down-weighted twice: by the focusing term ``p_m^γ−`` and by the probability shift, which also
discards easy negatives (``p < clip``) entirely. The element-wise arithmetic follows the authors'
``AsymmetricLoss`` operation for operation, so ``reduction='sum'`` returns their value exactly (bit for bit in
float32 and float64).

In eager mode a fused kernel (:mod:`hierloss.losses._elementwise`) computes the terms and their derivative in one
sweep; under ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``, ``hessian``), forward-mode AD and
``torch.compile`` the plain formula (``_reference_terms``) runs, so every transform applies, per-sample gradients
included.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from hierloss._reduction import check_reduction, reduce_loss
from hierloss.losses._elementwise import asymmetric_kernel, fused_loss, prepare_target, use_fused
from hierloss.losses._prelude import prelude

__all__ = ["AsymmetricLoss", "asymmetric_loss"]


def _check_args(gamma_neg: float, gamma_pos: float, clip: float, eps: float) -> None:
    for name, value in (("gamma_neg", gamma_neg), ("gamma_pos", gamma_pos)):
        if not 0 <= value < math.inf:  # comparisons: NaN and inf fail them
            raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    if not 0 <= clip < 1:
        raise ValueError(f"`clip` must be in [0, 1), got {clip!r}")
    if not 0 < eps < 1:
        raise ValueError(f"`eps` must be in (0, 1), got {eps!r}")


def asymmetric_loss(
    input: Tensor,
    target: Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    reduction: str = "mean",
    detach_focusing_weight: bool = False,
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """Asymmetric loss of logits ``input`` against 0/1 (or soft) ``target``.

    Args:
        input: ``(N, C)`` logits.
        target: ``(N, C)`` targets in ``[0, 1]``; NaN and ``ignore_index`` entries are left out.
        gamma_neg: focusing exponent γ− of negatives.
        gamma_pos: focusing exponent γ+ of positives.
        clip: probability shift ``m`` of negatives (``0`` disables it).
        eps: lower clamp of both log arguments, as in the original.
        reduction: ``'sum'`` over elements (the original's return value, exactly); ``'mean'``: that sum divided by
            the number of valid elements, ``N·C`` when nothing is masked (so one learning rate works for any batch
            size or label count; the original has no mean); ``'none'``: the ``(N, C)`` element-wise losses, 0 at
            masked entries.
        detach_focusing_weight: compute the weights ``(1 − p)^γ+`` / ``p_m^γ−`` without gradient (as the original
            did with ``disable_torch_grad_focal_loss=True``, by toggling the global grad mode); here a plain
            ``.detach()``. The default, ``False``, differentiates through them, as the current original does.
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
        >>> logits = torch.tensor([[2.0, -3.0]])
        >>> round(asymmetric_loss(logits, torch.tensor([[1.0, 0.0]]), reduction="sum").item(), 5)
        0.01513
    """
    _check_args(gamma_neg, gamma_pos, clip, eps)
    with prelude(input, target, reduction) as x:
        y, valid, zero_one = prepare_target(target, ignore_index, validate_args, x.dtype)
        reference = functools.partial(_reference_terms, y=y, valid=valid, gamma_neg=gamma_neg, gamma_pos=gamma_pos,
                                      clip=clip, eps=eps, detach_focusing_weight=detach_focusing_weight)
        if use_fused(x, target):
            kernel = functools.partial(asymmetric_kernel, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps,
                                       detach_focusing_weight=detach_focusing_weight, zero_one=zero_one)
            return fused_loss(kernel, reference, x, y, valid, per_sample=False, reduction=reduction)
        return reduce_loss(reference(x), reduction, valid)


def _reference_terms(x: Tensor, y: Tensor, valid: Tensor | None, gamma_neg: float, gamma_pos: float, clip: float,
                     eps: float, detach_focusing_weight: bool) -> Tensor:
    """The ``(N, C)`` element-wise losses in plain PyTorch, operation for operation the authors' ``AsymmetricLoss``.

    The reference the fused kernel is tested against; it also runs under ``torch.func`` transforms, forward-mode AD
    and ``torch.compile`` (see :func:`hierloss.losses._elementwise.use_fused`). ``y`` is the clean float target,
    ``valid`` the mask of left-out entries (``None``: none).
    """
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)  # 1 − p_m
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        weight = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * (weight.detach() if detach_focusing_weight else weight)
    loss = -loss
    if valid is not None:
        loss = torch.where(valid, loss, 0.0)
    return loss


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021); ``loss(logits, target)``.

    ``reduction='sum'`` equals the authors' ``AsymmetricLoss`` exactly; the default ``'mean'`` divides that sum by
    ``N·C``. See :func:`asymmetric_loss` for the formula and every argument.

    Args:
        gamma_neg: γ− (default 4).
        gamma_pos: γ+ (default 1, the original's default; the paper's best ImageNet-style runs use 0).
        clip: probability shift of negatives (default 0.05).
        eps: log clamp (default 1e-8).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'``.
        detach_focusing_weight: stop the gradient through the focusing weights.
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values (see the functional form; not under ``vmap``); ``False`` never
            synchronises.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import AsymmetricLoss
        >>> criterion = AsymmetricLoss()
        >>> logits = torch.randn(8, 5, requires_grad=True)
        >>> criterion(logits, torch.randint(0, 2, (8, 5))).backward()
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 1.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        reduction: str = "mean",
        detach_focusing_weight: bool = False,
        ignore_index: float | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        _check_args(gamma_neg, gamma_pos, clip, eps)
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = float(clip)
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)
        self.detach_focusing_weight = detach_focusing_weight
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits) against ``target`` (``(N, C)``)."""
        return asymmetric_loss(input, target, self.gamma_neg, self.gamma_pos, self.clip, self.eps, self.reduction,
                               self.detach_focusing_weight, self.ignore_index, self.validate_args)

    def extra_repr(self) -> str:
        return (f"gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}, eps={self.eps}, "
                f"reduction={self.reduction!r}, detach_focusing_weight={self.detach_focusing_weight}")
