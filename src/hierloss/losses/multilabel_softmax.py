"""Multi-label softmax loss (MSML; Ge et al., "Chest X-rays Classification: A Multi-Label and Fine-Grained
Problem", arXiv:1807.07247, 2018).

Each positive label competes in a softmax against all the negative labels of its sample. Per sample, with
positives ``P`` and negatives ``Q``, the formula implemented here is::

    ℓ = −(1/|P|) Σ_{i∈P} log( e^{x_i} / (e^{x_i} + Σ_{j∈Q} e^{x_j}) )
      =  (1/|P|) Σ_{i∈P} softplus( logsumexp_{j∈Q} x_j − x_i )

The second line is what is computed (stable for any finite logits). A sample with no positive contributes 0; with
no negative, every softmax is 1 and the loss is 0. Like ZLPR, MSML only ranks positives above negatives: it is
invariant to adding a constant to all the logits of a sample, so its outputs are scores, not probabilities;
threshold them per label on validation data (e.g. at the F1-optimal point) rather than at 0.

In eager mode a fused kernel (:mod:`hierloss.losses._elementwise`) computes the terms and their derivative in one
sweep; under ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``, ``hessian``), forward-mode AD and
``torch.compile`` the plain formula (``_reference_terms``) runs, so every transform applies, per-sample gradients
included.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hierloss._reduction import check_reduction, reduce_loss
from hierloss.losses._elementwise import fused_loss, multilabel_softmax_kernel, prepare_target, use_fused
from hierloss.losses._prelude import prelude

__all__ = ["MultiLabelSoftmaxLoss", "multilabel_softmax_loss"]


def multilabel_softmax_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """Multi-label softmax loss: each positive in a softmax against the negatives, averaged over positives.

    Args:
        input: ``(N, C)`` logits.
        target: ``(N, C)`` 0/1 targets (positive when ``> 0.5``); NaN and ``ignore_index`` entries belong to
            neither set.
        reduction: ``'mean'`` or ``'sum'`` over samples (samples without positives count, with loss 0), or
            ``'none'`` for the ``(N,)`` per-sample losses.
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
        >>> logits = torch.tensor([[2.0, 0.0, 1.0]])
        >>> round(multilabel_softmax_loss(logits, torch.tensor([[1.0, 0.0, 0.0]])).item(), 4)  # −log(e²/(e²+1+e))
        0.4076
    """
    with prelude(input, target, reduction) as x:
        y, valid, zero_one = prepare_target(target, ignore_index, validate_args, x.dtype)
        reference = functools.partial(_reference_terms, y=y, valid=valid)
        if use_fused(x, target):
            kernel = functools.partial(multilabel_softmax_kernel, zero_one=zero_one)
            return fused_loss(kernel, reference, x, y, valid, per_sample=True, reduction=reduction)
        return reduce_loss(reference(x), reduction)


def _reference_terms(x: Tensor, y: Tensor, valid: Tensor | None) -> Tensor:
    """The ``(N,)`` per-sample losses in plain PyTorch (the second line of the module docstring's formula).

    The reference the fused kernel is tested against; it also runs under ``torch.func`` transforms, forward-mode AD
    and ``torch.compile`` (see :func:`hierloss.losses._elementwise.use_fused`). ``y`` is the clean float target,
    ``valid`` the mask of left-out entries (``None``: none).
    """
    positive = y > 0.5
    negative = ~positive
    if valid is not None:
        positive, negative = positive & valid, negative & valid
    masked = torch.where(negative, x, float("-inf"))
    has_negative = negative.any(-1, keepdim=True)
    shift = torch.where(has_negative, masked.amax(-1, keepdim=True), 0.0).detach()
    total = torch.exp(masked - shift).sum(-1, keepdim=True)
    lse_negative = shift + torch.log(torch.where(has_negative, total, 1.0))  # finite; unused without negatives
    terms = torch.where(positive & has_negative, F.softplus(lse_negative - x), 0.0)
    return terms.sum(-1) / positive.sum(-1).clamp_min(1)


class MultiLabelSoftmaxLoss(nn.Module):
    """Multi-label softmax loss (MSML; Ge et al., 2018); ``loss(logits, target)``.

    See :func:`multilabel_softmax_loss` for the exact formula and every argument.

    Args:
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over samples.
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values (see the functional form; not under ``vmap``); ``False`` never
            synchronises.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import MultiLabelSoftmaxLoss
        >>> logits = torch.randn(8, 5, requires_grad=True)
        >>> MultiLabelSoftmaxLoss()(logits, torch.randint(0, 2, (8, 5))).backward()
    """

    def __init__(self, reduction: str = "mean", ignore_index: float | None = None,
                 validate_args: bool = True) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits) against ``target`` (``(N, C)``)."""
        return multilabel_softmax_loss(input, target, self.reduction, self.ignore_index, self.validate_args)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
