"""Checks of tensor *values* that the losses run when ``validate_args=True`` (their default), and the conversion of a
``pos_weight`` argument into a tensor.

Shapes and hyper-parameters are checked always and for free. Values cost a reduction over the input and a read
back to the host, which on an accelerator synchronises with the device; so, as in torchmetrics, they sit behind
``validate_args``: ``validate_args=False`` checks no value and never synchronises. Under ``torch.compile`` they are
skipped too (a read back would break the graph), and so are the checks of a tensor batched by ``torch.func.vmap``
(per-sample gradients), whose values cannot be read back inside the transform; a tensor that is not batched (a
target closed over by the vmapped function, a constant) is still checked. Every error names the offending column
(by label when the caller knows the labels), the value, and how many such values there are.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_pos_weight", "check_pair", "check_pos_weight", "check_probabilities", "check_target",
           "check_unique_columns", "check_width", "pos_weight_constant", "target_is_clean", "validating",
           "values_readable"]


def check_width(input: Tensor, num_labels: int | None = None, *, matrix: bool = True, name: str = "input") -> None:
    """The one shape check of a score tensor: ``(N, C)`` (``(..., C)`` with ``matrix=False``), ``C = num_labels``
    when given; a ``ValueError`` that says what was expected and what came."""
    width = "C" if num_labels is None else str(num_labels)
    if matrix:
        if input.ndim != 2 or (num_labels is not None and input.shape[1] != num_labels):
            raise ValueError(f"Expected `{name}` of shape (N, {width}), got {tuple(input.shape)}")
    elif input.ndim == 0 or (num_labels is not None and input.shape[-1] != num_labels):
        raise ValueError(f"Expected `{name}` of shape (..., {width}), got {tuple(input.shape)}")


def check_pair(input: Tensor, target: Tensor, num_labels: int | None = None) -> None:
    """``input`` ``(N, C)`` (``C = num_labels`` when given) and ``target`` of the same shape."""
    check_width(input, num_labels)
    if target.shape != input.shape:
        raise ValueError(f"Expected `target` of shape {tuple(input.shape)} like `input`, got {tuple(target.shape)}")


def validating(validate_args: bool) -> bool:
    """Whether to run the value checks now: ``validate_args`` and not being traced by ``torch.compile``."""
    return validate_args and not torch.compiler.is_compiling()


def _transforms_active() -> bool:
    try:
        return bool(torch._C._are_functorch_transforms_active())
    except AttributeError:  # pragma: no cover - a torch without functorch
        return False


def values_readable(tensor: Tensor) -> bool:
    """False for a tensor batched by ``torch.func.vmap`` (at any level of nested transforms): its values cannot be
    read back inside the transform. Plain tensors and tensors wrapped by ``torch.func.grad`` / ``jvp`` only are
    readable."""
    if not _transforms_active():
        return True
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        if functorch.is_batchedtensor(tensor):
            return False
        tensor = functorch.get_unwrapped(tensor)
    return True


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


def _range(values: Tensor) -> tuple[float, float]:
    """``(min, max)`` of a non-empty tensor in one pass and one read back (NaN if any value is NaN)."""
    lo, hi = torch.aminmax(values.detach() if values.requires_grad else values)
    if values.is_cpu:  # reading a CPU scalar costs nothing: skip the stack
        return float(lo), float(hi)
    both = torch.stack((lo, hi)).tolist()
    return float(both[0]), float(both[1])


def target_is_clean(target: Tensor, ignore_index: float | None = None, labels: Sequence[str] | None = None) -> bool:
    """:func:`check_target`, returning whether nothing in ``target`` needs masking: every value in ``[0, 1]`` (so
    no NaN) and no ``ignore_index`` possible among them. ``False`` means "may need a mask" (also when the values
    were not read: an empty or unreadable tensor)."""
    if target.numel() == 0 or not values_readable(target):
        return False
    clean = ignore_index is None or not 0 <= ignore_index <= 1
    if target.dtype == torch.bool:
        return clean
    lo, hi = _range(target)
    if lo >= 0 and hi <= 1:  # NaN anywhere makes this False: then look closer
        return clean
    target = target.detach()
    bad = (target < 0) | (target > 1)  # False at NaN, which is allowed
    if ignore_index is not None:
        bad &= target != ignore_index
    if not bool(bad.any()):
        return False
    col, value, count = _first_bad(target, bad)
    hint = "; pass ignore_index=-1 to leave uncertain labels out" if value == -1 and ignore_index is None else ""
    allowed = "[0, 1] or NaN" + ("" if ignore_index is None else f" or ignore_index={ignore_index!r}")
    raise ValueError(f"Expected `target` values in {allowed}, but {_column(labels, col)} holds {value!r} "
                     f"({count} such value{'s' if count != 1 else ''}){hint}")


def check_target(target: Tensor, ignore_index: float | None = None, labels: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless every target is in ``[0, 1]``, NaN (a missing label) or ``ignore_index``.

    Soft targets in ``[0, 1]`` are accepted (the BCE family is defined for them; the set-based losses count a target
    above 0.5 as positive). A ``-1`` (CheXpert's "uncertain") without ``ignore_index=-1`` is refused with that hint.
    One ``aminmax`` pass and one read back decide in the common case; the offender is searched only when there is
    one. A tensor batched by ``torch.func.vmap`` is not checked (its values cannot be read).
    """
    target_is_clean(target, ignore_index, labels)


def check_probabilities(input: Tensor, labels: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless every entry of ``input`` is a probability in ``[0, 1]`` (``from_logits=False``).

    As PyTorch's ``binary_cross_entropy`` does; raw logits passed by mistake are the usual cause. A tensor batched by
    ``torch.func.vmap`` is not checked.
    """
    if input.numel() == 0 or not values_readable(input):
        return
    values = input.detach()
    lo, hi = _range(values)
    if lo >= 0 and hi <= 1:
        return
    bad = ~((values >= 0) & (values <= 1))  # True at NaN
    col, value, count = _first_bad(values, bad)
    raise ValueError(f"Expected probabilities in [0, 1] with from_logits=False, but `input` {_column(labels, col)} "
                     f"holds {value!r} ({count} such value{'s' if count != 1 else ''}); pass logits with "
                     "from_logits=True")


_POS_WEIGHT_KINDS = ("a number (the same weight for every label), a sequence or NumPy array of C numbers, or a 0-d "
                     "or (C,) tensor")


def as_pos_weight(pos_weight: Any, labels: Sequence[str], like: Tensor | None = None) -> Tensor | None:
    """A ``pos_weight`` argument as a ``(C,)`` tensor, ``C = len(labels)``; ``None`` stays ``None``.

    Accepts what :class:`torch.nn.BCEWithLogitsLoss` users pass: a Python or NumPy number (the same weight for every
    label), a list, tuple or NumPy array of ``C`` numbers, a 0-d tensor (expanded) or a ``(C,)`` tensor. A floating
    ``(C,)`` tensor is returned as it is (a learnable ``pos_weight`` keeps its gradient); anything else is converted
    to a floating tensor on ``like``'s device, in ``like``'s floating dtype (float32 without ``like``). Values are
    not read (see :func:`check_pos_weight`).

    Raises:
        TypeError: for a bool, a string, a mapping or anything that is not numbers.
        ValueError: for a length other than ``C``.
    """
    if pos_weight is None:
        return None
    num_labels = len(labels)
    if isinstance(pos_weight, Tensor):
        weight = pos_weight
    else:
        if isinstance(pos_weight, (bool, np.bool_, str, bytes, Mapping)):
            raise TypeError(f"pos_weight must be {_POS_WEIGHT_KINDS}; got {type(pos_weight).__name__}")
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
        device = None if like is None else like.device
        try:
            weight = torch.as_tensor(np.asarray(pos_weight) if not isinstance(pos_weight, numbers.Number)
                                     else pos_weight, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"pos_weight must be {_POS_WEIGHT_KINDS}; could not read a {type(pos_weight).__name__} "
                            f"as numbers ({error})") from None
    if weight.dtype == torch.bool or weight.is_complex():
        raise TypeError(f"pos_weight must be {_POS_WEIGHT_KINDS}; got a {weight.dtype} tensor")
    if not weight.is_floating_point():
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
        weight = weight.to(dtype)
    if weight.ndim == 0:
        return weight.expand(num_labels)
    if weight.shape != (num_labels,):
        raise ValueError(f"Expected `pos_weight` of shape ({num_labels},), got {tuple(weight.shape)}")
    return weight


def pos_weight_constant(pos_weight: Any, labels: Sequence[str]) -> Tensor | None:
    """A module's ``pos_weight`` argument as a float32 ``(C,)`` tensor for its buffer (``None`` stays ``None``),
    checked once: every value finite and ``>= 0``. Accepts everything :func:`as_pos_weight` accepts."""
    weight = as_pos_weight(pos_weight, labels)
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=torch.float32).contiguous()  # a scalar's expanded view gets its storage
    check_pos_weight(weight, labels)
    return weight


def check_pos_weight(pos_weight: Tensor, labels: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless every ``pos_weight`` is finite and ``>= 0`` (always checked: a constant). A tensor
    batched by ``torch.func.vmap`` is not checked."""
    if pos_weight.numel() == 0 or not values_readable(pos_weight):
        return
    values = pos_weight.detach()
    lo, hi = _range(values)
    if lo >= 0 and hi < float("inf"):  # NaN fails both
        return
    bad = ~(torch.isfinite(values) & (values >= 0))
    col = int(torch.nonzero(bad.reshape(-1))[0])
    value = float(values.reshape(-1)[col])
    where = f"label {labels[col]!r}" if labels is not None and col < len(labels) else f"entry {col}"
    raise ValueError(f"`pos_weight` must be finite and >= 0, but {where} is {value!r}")


def check_unique_columns(columns: Any, labels: Sequence[str], what: str, needs: str) -> None:
    """Raise ``ValueError`` naming the ``labels`` that ``columns`` (a pandas ``Index``) holds more than once: selecting
    a repeated column by name returns every copy, which would shift the columns after it. Other columns may repeat.
    ``what`` names the frame (``"DataFrame"``), ``needs`` who needs each label once (``"propagate"``)."""
    counts = columns.value_counts()
    repeated = [label for label in labels if counts.get(label, 0) > 1]
    if len(repeated) == 1:
        raise ValueError(f"{what} has the label column {repeated[0]!r} {counts[repeated[0]]} times; {needs} each "
                         "label column once")
    if repeated:
        raise ValueError(f"{what} has the label columns {repeated!r} more than once; {needs} each label column once")
