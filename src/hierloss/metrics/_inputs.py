"""Input handling shared by the metrics: NumPy or torch in, float tensors out, shapes checked."""

from __future__ import annotations

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


def scores_for(preds: Any, hierarchy: Hierarchy | None, from_logits: bool = False, name: str = "preds") -> Tensor:
    """Float ``(N, C)`` scores (probabilities when ``from_logits``), checked against the hierarchy's width."""
    scores = as_tensor(preds, name)
    if scores.ndim != 2:
        raise ValueError(f"Expected `{name}` of shape (N, C), got {tuple(scores.shape)}")
    if hierarchy is not None and scores.shape[1] != hierarchy.num_labels:
        raise ValueError(f"Expected `{name}.shape[1]` to be {hierarchy.num_labels} (hierarchy.num_labels), "
                         f"got {scores.shape[1]}")
    scores = scores.double() if scores.dtype == torch.float64 else scores.float()
    return torch.sigmoid(scores) if from_logits else scores


def targets_like(target: Any, scores: Tensor) -> Tensor:
    """0/1 ``target`` of the same shape as ``scores``, as a bool tensor on the same device."""
    t = as_tensor(target, "target").to(scores.device)
    if t.shape != scores.shape:
        raise ValueError(f"Expected `target` of shape {tuple(scores.shape)} like `preds`, got {tuple(t.shape)}")
    bad = (t != 0) & (t != 1)
    if bool(bad.any()):
        value = t[bad][0].item()
        col = int(torch.nonzero(bad)[0, 1])
        raise ValueError(f"`target` column {col} holds {value!r}; metrics expect 0/1 targets")
    return t.bool()
