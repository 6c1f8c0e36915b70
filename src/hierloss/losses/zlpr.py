"""ZLPR: the zero-bounded log-sum-exp & pairwise rank-based loss (Su et al., 2022; "multi-label categorical
cross-entropy"), with an optional temperature (the focal/tempered ZLPR of Hanif et al., Bioengineering 2025).

Per sample, with ``s = logits / temperature``, positives ``P`` and negatives ``Q``::

    ℓ = log(1 + Σ_{j∈Q} e^{s_j})  +  log(1 + Σ_{i∈P} e^{−s_i})

which smoothly upper-bounds the pairwise ranking hinge ``max(0, max_Q s − min_P s)`` while pulling every
positive above 0 and every negative below 0: **the decision rule is ``s > 0``** (equivalently ``logits > 0``),
not ``σ(s) > 0.5`` of a calibrated probability. Each ``log(1 + Σ e^v)`` is a log-sum-exp with a 0 appended,
computed in float32 (float64 stays float64) with labels outside a set masked by ``−∞``: no ``±1e12`` constants,
so fp16/bf16 inputs under autocast are safe.

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
from hierloss.losses._elementwise import fused_loss, prepare_target, use_fused, zlpr_kernel
from hierloss.losses._prelude import prelude

__all__ = ["ZLPRLoss", "zlpr_loss"]


def log1p_sum_exp(values: Tensor) -> Tensor:
    """``log(1 + Σ_j exp(values[..., j]))`` over the last axis, stable for any finite or ``−∞`` entries.

    ``−∞`` entries contribute nothing (a row of only ``−∞`` gives 0) and receive a zero gradient, never NaN.
    """
    shift = values.amax(-1, keepdim=True).clamp_min(0).detach()  # finite: the appended 0 bounds it below
    total = torch.exp(-shift) + torch.exp(values - shift).sum(-1, keepdim=True)
    return (shift + torch.log(total)).squeeze(-1)


def zlpr_loss(
    input: Tensor,
    target: Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """ZLPR loss (multi-label categorical cross-entropy) of logits ``input`` against 0/1 ``target``.

    Args:
        input: ``(N, C)`` logits.
        target: ``(N, C)`` 0/1 targets (an entry counts as positive when ``> 0.5``); NaN and ``ignore_index``
            entries belong to neither set.
        temperature: ``s = input / temperature``; must be ``> 0``. Below 1 sharpens the loss onto the hardest
            labels (the tempered ZLPR used on NIH ChestX-ray14).
        reduction: ``'mean'`` or ``'sum'`` over samples, or ``'none'`` for the ``(N,)`` per-sample losses.
        ignore_index: a target value (e.g. ``-1``) to leave out.
        validate_args: check that every target is in ``[0, 1]``, NaN or ``ignore_index`` and raise a
            ``ValueError`` naming the first offending column and value otherwise (default). This reads a value
            back, a device synchronisation on a GPU; ``False`` checks no value and never synchronises. A target
            batched by ``torch.func.vmap`` (per-sample gradients) cannot be read back: its values are not checked
            there, as under ``torch.compile``; check the batch once outside the transform if needed.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[3.0, -2.0, 0.5]])
        >>> round(zlpr_loss(logits, torch.tensor([[1.0, 0.0, 0.0]])).item(), 4)  # log(1+e^-2+e^.5)+log(1+e^-3)
        1.0725
    """
    _check_temperature(temperature)
    with prelude(input, target, reduction) as x:
        y, valid, zero_one = prepare_target(target, ignore_index, validate_args, x.dtype)
        reference = functools.partial(_reference_terms, y=y, valid=valid, temperature=temperature)
        if use_fused(x, target):
            kernel = functools.partial(zlpr_kernel, temperature=temperature, zero_one=zero_one)
            return fused_loss(kernel, reference, x, y, valid, per_sample=True, reduction=reduction)
        return reduce_loss(reference(x), reduction)


def _reference_terms(x: Tensor, y: Tensor, valid: Tensor | None, temperature: float) -> Tensor:
    """The ``(N,)`` per-sample losses in plain PyTorch (two :func:`log1p_sum_exp` of masked logits).

    The reference the fused kernel is tested against; it also runs under ``torch.func`` transforms, forward-mode AD
    and ``torch.compile`` (see :func:`hierloss.losses._elementwise.use_fused`). ``y`` is the clean float target,
    ``valid`` the mask of left-out entries (``None``: none).
    """
    s = x / temperature
    positive = y > 0.5
    negative = ~positive
    if valid is not None:
        positive, negative = positive & valid, negative & valid
    neg_inf = float("-inf")
    return log1p_sum_exp(torch.where(negative, s, neg_inf)) + log1p_sum_exp(torch.where(positive, -s, neg_inf))


def _check_temperature(temperature: float) -> None:
    if not 0 < temperature < math.inf:  # comparisons: NaN and inf fail them
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")


class ZLPRLoss(nn.Module):
    """ZLPR loss (Su et al., 2022) with a temperature; ``loss(logits, target)``. Predict positive where ``logits > 0``.

    See :func:`zlpr_loss` for the formula and every argument.

    Args:
        temperature: divides the logits (default 1, plain ZLPR); must be ``> 0``.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over samples.
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values (see the functional form; not under ``vmap``); ``False`` never
            synchronises.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import ZLPRLoss
        >>> logits = torch.randn(8, 5, requires_grad=True)
        >>> ZLPRLoss(temperature=0.5)(logits, torch.randint(0, 2, (8, 5))).backward()
        >>> predicted = logits > 0  # the decision rule of ZLPR
    """

    def __init__(self, temperature: float = 1.0, reduction: str = "mean", ignore_index: float | None = None,
                 validate_args: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = float(temperature)
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits) against ``target`` (``(N, C)``)."""
        return zlpr_loss(input, target, self.temperature, self.reduction, self.ignore_index, self.validate_args)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"
