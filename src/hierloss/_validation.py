"""Checks of tensor *values* that the losses run when ``validate_args=True`` (their default).

Shapes and hyper-parameters are checked always and for free. Values cost a reduction over the input and a read
back to the host, which on an accelerator synchronises with the device; so, as in torchmetrics, they sit behind
``validate_args``: ``validate_args=False`` checks no value and never synchronises. Under ``torch.compile`` they are
skipped too (a read back would break the graph). Every error names the offending column (by label when the caller
knows the labels), the value, and how many such values there are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_pos_weight", "check_probabilities", "check_target", "pos_weight_constant", "validating"]


def validating(validate_args: bool) -> bool:
    """Whether to run the value checks now: ``validate_args`` and not being traced by ``torch.compile``."""
    return validate_args and not torch.compiler.is_compiling()


def _column(labels: Sequence[str] | None, index: int) -> str:
    if labels is not None and 0 <= index < len(labels):
        return f"column {index} ({labels[index]!r})"
    return f"column {index}"


def _first_bad(values: Tensor, bad: Tensor) -> tuple[int, float, int]:
    """``(column, value, count)`` of the first offending entry of a 2-D (or 1-D) ``values`` under mask ``bad``."""
    flat_bad = bad.reshape(-1, bad.shape[-1]) if bad.ndim else bad.reshape(1, 1)
    rows, cols = torch.nonzero(flat_bad, as_tuple=True)
    col = int(cols[0])
    value = float(values.reshape(flat_bad.shape)[int(rows[0]), col])
    return col, value, int(flat_bad.sum())


def check_target(target: Tensor, ignore_index: float | None = None, labels: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless every target is in ``[0, 1]``, NaN (a missing label) or ``ignore_index``.

    Soft targets in ``[0, 1]`` are accepted (the BCE family is defined for them; the set-based losses count a target
    above 0.5 as positive). A ``-1`` (CheXpert's "uncertain") without ``ignore_index=-1`` is refused with that hint.
    One ``aminmax`` pass decides in the common case; the offender is searched only when there is one.
    """
    if target.dtype == torch.bool or target.numel() == 0:
        return
    lo, hi = torch.aminmax(target)
    if bool((lo >= 0) & (hi <= 1)):  # NaN anywhere makes this False: then look closer
        return
    bad = (target < 0) | (target > 1)  # False at NaN, which is allowed
    if ignore_index is not None:
        bad &= target != ignore_index
    if not bool(bad.any()):
        return
    col, value, count = _first_bad(target, bad)
    hint = "; pass ignore_index=-1 to leave uncertain labels out" if value == -1 and ignore_index is None else ""
    allowed = "[0, 1] or NaN" + ("" if ignore_index is None else f" or ignore_index={ignore_index!r}")
    raise ValueError(f"Expected `target` values in {allowed}, but {_column(labels, col)} holds {value!r} "
                     f"({count} such value{'s' if count != 1 else ''}){hint}")


def check_probabilities(input: Tensor, labels: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless every entry of ``input`` is a probability in ``[0, 1]`` (``from_logits=False``).

    As PyTorch's ``binary_cross_entropy`` does; raw logits passed by mistake are the usual cause.
    """
    if input.numel() == 0:
        return
    lo, hi = torch.aminmax(input.detach())
    if bool((lo >= 0) & (hi <= 1)):
        return
    values = input.detach()
    bad = ~((values >= 0) & (values <= 1))  # True at NaN
    col, value, count = _first_bad(values, bad)
    raise ValueError(f"Expected probabilities in [0, 1] with from_logits=False, but `input` {_column(labels, col)} "
                     f"holds {value!r} ({count} such value{'s' if count != 1 else ''}); pass logits with "
                     "from_logits=True")


def pos_weight_constant(pos_weight: Tensor | Sequence[float] | None, labels: Sequence[str]) -> Tensor | None:
    """A module's ``pos_weight`` argument as a float32 ``(C,)`` tensor for its buffer (``None`` stays ``None``),
    checked once: its shape is ``(len(labels),)`` and every value finite and ``>= 0``."""
    if pos_weight is None:
        return None
    weight = torch.as_tensor(pos_weight, dtype=torch.float32)
    if weight.shape != (len(labels),):
        raise ValueError(f"Expected `pos_weight` of shape ({len(labels)},), got {tuple(weight.shape)}")
    check_pos_weight(weight, labels)
    return weight


def check_pos_weight(pos_weight: Tensor, labels: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless every ``pos_weight`` is finite and ``>= 0`` (always checked: a constant)."""
    values = pos_weight.detach()
    bad = ~(torch.isfinite(values) & (values >= 0))
    if bool(bad.any()):
        col = int(torch.nonzero(bad.reshape(-1))[0])
        value = float(values.reshape(-1)[col])
        where = f"label {labels[col]!r}" if labels is not None and col < len(labels) else f"entry {col}"
        raise ValueError(f"`pos_weight` must be finite and >= 0, but {where} is {value!r}")
