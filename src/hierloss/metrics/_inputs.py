"""Input handling shared by the metrics: NumPy or torch in, float tensors out, shapes and arguments checked.

Checks of shapes and arguments read only Python values. Checks of the *values* (NaN scores, non-0/1 targets) read
tensors back to the host, a GPU synchronisation, so they run only with ``validate_args=True``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hierloss.hierarchy import Hierarchy


def as_tensor(values: Any, name: str) -> Tensor:
    """``values`` as a tensor (NumPy arrays and nested lists accepted; tensors keep their device)."""
    if isinstance(values, Tensor):
        return values
    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(values))
    try:
        return torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"`{name}` must be a torch tensor or a NumPy array, got {type(values).__name__}") from None


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number (Python or NumPy), booleans excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_threshold(threshold: object, allow_none: bool = True) -> None:
    """The one threshold rule of the metrics: a number strictly between 0 and 1 (or ``None`` where allowed).

    Raises:
        TypeError: for anything but a number (booleans included), or ``None`` where it is not allowed.
        ValueError: for a number outside ``(0, 1)``, NaN included.
    """
    if threshold is None and allow_none:
        return
    accepted = "(0, 1) or None" if allow_none else "(0, 1)"
    if not is_number(threshold):
        raise TypeError(f"threshold must be a number in {accepted}, got {type(threshold).__name__}")
    if not 0.0 < threshold < 1.0:  # type: ignore[operator]  # a number: checked above; False for NaN
        raise ValueError(f"threshold must be in {accepted}, got {threshold!r}")


def check_zero_division(zero_division: object) -> None:
    """Raise ``TypeError`` unless ``zero_division`` is a number (NaN allowed, as in scikit-learn; booleans not)."""
    if not is_number(zero_division):
        raise TypeError(f"zero_division must be a number such as 0.0, 1.0 or float('nan'), got {zero_division!r} "
                        "(scikit-learn's 'warn' means 0.0 with a warning: pass 0.0)")


def check_no_nan(scores: Tensor, name: str, hierarchy: Hierarchy | None = None,
                 why: str = "a metric needs a number for every score (scikit-learn refuses NaN too)") -> None:
    """Raise ``ValueError`` naming the first column of ``(N, C)`` ``scores`` that holds NaN, and how many; ``why``
    says why NaN is refused.

    Reads the tensor back to the host (a GPU synchronisation): call it only under ``validate_args=True``.
    """
    if not scores.is_floating_point():
        return
    nan = torch.isnan(scores)
    if not bool(nan.any()):
        return
    per_column = nan.sum(0)
    col = int(torch.nonzero(per_column)[0])
    label = f" ({hierarchy.labels[col]!r})" if hierarchy is not None else ""
    others = int((per_column > 0).sum()) - 1
    more = f", and {others} more column(s) hold NaN too" if others else ""
    raise ValueError(f"`{name}` column {col}{label} holds {int(per_column[col])} NaN value(s){more}; {why}: drop or "
                     "impute them first")


def scores_for(preds: Any, hierarchy: Hierarchy | None, from_logits: bool = False, name: str = "preds",
               validate_args: bool = True) -> Tensor:
    """Float ``(N, C)`` scores (probabilities when ``from_logits``), checked against the hierarchy's width.

    With ``validate_args`` a NaN score is a ``ValueError`` naming its column (and label, given a hierarchy).
    """
    scores = as_tensor(preds, name)
    if scores.ndim != 2:
        raise ValueError(f"Expected `{name}` of shape (N, C), got {tuple(scores.shape)}")
    if hierarchy is not None and scores.shape[1] != hierarchy.num_labels:
        raise ValueError(f"Expected `{name}.shape[1]` to be {hierarchy.num_labels} (hierarchy.num_labels), "
                         f"got {scores.shape[1]}")
    if validate_args:
        check_no_nan(scores, name, hierarchy)
    scores = scores.double() if scores.dtype == torch.float64 else scores.float()
    return torch.sigmoid(scores) if from_logits else scores


def targets_like(target: Any, scores: Tensor, validate_args: bool = True) -> Tensor:
    """0/1 ``target`` of the same shape as ``scores``, as a bool tensor on the same device.

    With ``validate_args`` a value other than 0 or 1 is a ``ValueError`` naming its column and the value; without,
    every non-zero value counts as 1.
    """
    t = as_tensor(target, "target").to(scores.device)
    if t.shape != scores.shape:
        raise ValueError(f"Expected `target` of shape {tuple(scores.shape)} like `preds`, got {tuple(t.shape)}")
    if validate_args:
        bad = (t != 0) & (t != 1)
        if bool(bad.any()):
            value = t[bad][0].item()
            col = int(torch.nonzero(bad)[0, 1])
            raise ValueError(f"`target` column {col} holds {value!r}; metrics expect 0/1 targets")
    return t.bool()
