"""What every loss starts with: its arguments checked, autocast left, the input in float32 (float64 stays)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from hierloss._autocast import autocast_disabled
from hierloss._reduction import check_reduction
from hierloss._validation import check_pair, check_width

__all__ = ["prelude"]


@contextlib.contextmanager
def prelude(input: Tensor, target: Tensor | None, reduction: str, num_labels: int | None = None) -> Iterator[Tensor]:
    """``with prelude(input, target, reduction) as x:`` — checks ``reduction``, that ``input`` is ``(N, C)``
    (``C = num_labels`` when given) and ``target`` alike (``target=None``: no target), then leaves autocast on the
    input's device for the block and gives the input as float32 (float64 stays): losses compute in at least
    float32 under fp16/bf16 autocast."""
    check_reduction(reduction)
    if target is None:
        check_width(input, num_labels)
    else:
        check_pair(input, target, num_labels)
    with autocast_disabled(input.device.type):
        yield input if input.dtype == torch.float64 else input.float()
