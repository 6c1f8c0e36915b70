"""How often predictions break the hierarchy: per sample, per edge, and as a report."""

from __future__ import annotations

import decimal
import functools
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from hierloss._penalty_forms import violated
from hierloss.hierarchy import Hierarchy
from hierloss.metrics._inputs import check_threshold, scores_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "consistency_report",
    "edge_violation_counts",
    "edge_violation_rates",
    "edge_violations",
    "sample_violations",
    "violation_rate",
]


@functools.lru_cache(maxsize=64)
def _logit_cut(threshold: float, dtype: torch.dtype) -> float:
    """The float64 number ``c`` that decides logits of ``dtype`` against a probability ``threshold``: ``x < c``
    exactly when ``sigmoid(x) < threshold``, and ``x > c`` exactly when ``sigmoid(x) > threshold``.

    ``c`` starts as ``logit(threshold)`` in float64 (exact at 0.5, where it is 0; elsewhere within a few rounding
    errors, with ``2 atanh(2t - 1)`` near 1/2 where ``log(t) - log1p(-t)`` loses digits). For float64 logits that
    is the answer: only a logit within a rounding error or two of ``logit(threshold)`` can be misjudged. For float32
    logits ``c`` is made exact: the float32 number ``f`` nearest ``logit(threshold)`` is the only one float64's
    rounding could misjudge, so ``sigmoid(f)`` is compared with the threshold in 60-digit decimal arithmetic and
    ``c`` becomes ``f`` itself on a tie, else the float64 number just beside ``f`` on the side ``logit(threshold)``
    lies.
    """
    t = float(threshold)
    logit = 2.0 * math.atanh(2.0 * t - 1.0) if 0.25 <= t <= 0.75 else math.log(t) - math.log1p(-t)
    if dtype == torch.float64:
        return logit
    nearest = float(np.float32(logit))
    with decimal.localcontext() as context:
        context.prec = 60
        gap = Decimal(t) * (1 + (-Decimal(nearest)).exp()) - 1  # the sign of threshold - sigmoid(nearest)
    if gap == 0:
        return nearest
    return math.nextafter(nearest, math.inf if gap > 0 else -math.inf)


def _edge_flags(values: Tensor, edge_index: Tensor, threshold: float | None, from_logits: bool = False) -> Tensor:
    """Bool ``(N, E)`` violation flags of ``(N, C)`` float32 or float64 probabilities, or logits with
    ``from_logits``, for a ``(2, E)`` parent/child ``edge_index``: the penalty forms' violation test
    (:func:`hierloss._penalty_forms.violated`).

    Logits are never passed through a sigmoid, whose float32 value is 1 for every logit above about 17 and so hides
    a child scored above its parent. The sigmoid is increasing, so ``sigmoid(a) < sigmoid(b)`` exactly when
    ``a < b``: without a threshold the logits are compared with each other. With one they are compared in float64
    (which holds every float32 exactly) with :func:`_logit_cut`, not with a float32 rounding of it.
    """
    parent, child = values.index_select(1, edge_index[0]), values.index_select(1, edge_index[1])
    if from_logits and threshold is not None:
        return violated(parent.double(), child.double(), _logit_cut(threshold, values.dtype))
    return violated(parent, child, threshold)


def edge_violations(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                    from_logits: bool = False, validate_args: bool = True) -> Tensor:
    """Bool ``(N, E)``: whether sample ``n`` violates edge ``e`` (edges in ``hierarchy.edges`` order).

    With a ``threshold`` the test is the reference's, strict on both sides: ``parent < t and child > t`` (a
    prediction of exactly ``t`` counts as neither positive nor negative). With ``threshold=None`` it is
    incoherence at *some* threshold: ``score(child) > score(parent)``, the incoherence that ranking metrics such
    as AUROC and AU(PRC) see, since they sweep every threshold.

    Args:
        preds: ``(N, C)`` scores (probabilities, or logits with ``from_logits=True``); NumPy accepted.
        hierarchy: the label hierarchy, ``C = hierarchy.num_labels``.
        threshold: decision threshold in ``(0, 1)``, or ``None`` for any threshold.
        from_logits: ``preds`` are logits, judged as their sigmoids would be judged with exact arithmetic: compared
            with each other (``threshold=None``) or with ``logit(threshold)``, never through a rounded sigmoid (in
            float32 every logit above about 17 has the sigmoid 1, so a child at 30 under a parent at 20 would not
            count).
        validate_args: refuse NaN predictions (a ``ValueError`` naming the label and the count). The check reads
            the predictions back to the host, a GPU synchronisation; with ``False`` nothing is read back and a NaN
            prediction violates no edge.

    Shape:
        ``(N, C)`` in, ``(N, E)`` out with ``E = hierarchy.num_edges``.

    Raises:
        ValueError: for a threshold outside ``(0, 1)``, ``preds`` of the wrong shape, or (``validate_args``) NaN
            predictions.
        TypeError: for a threshold that is not a number or ``None``, or ``preds`` that are neither a tensor nor
            array-like.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b", "c"]})
        >>> edge_violations(torch.tensor([[0.4, 0.6, 0.1]]), h)
        tensor([[ True, False]])
    """
    check_threshold(threshold)
    values = scores_for(preds, hierarchy, from_logits=False, validate_args=validate_args)  # logits stay logits
    return _edge_flags(values, hierarchy.edge_index.to(values.device), threshold, from_logits)


def sample_violations(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                      from_logits: bool = False, validate_args: bool = True) -> Tensor:
    """Bool ``(N,)``: whether each sample violates at least one edge (arguments as :func:`edge_violations`)."""
    return edge_violations(preds, hierarchy, threshold, from_logits, validate_args).any(dim=1)


def violation_rate(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                   from_logits: bool = False, validate_args: bool = True) -> Tensor:
    """Fraction of samples with at least one violated edge (a 0-d float32 tensor; 0 for an empty batch).

    ``threshold=0.5`` counts samples whose *decisions* break the hierarchy (a child predicted positive under a
    parent predicted negative). ``threshold=None`` counts samples whose *scores* do (some child scores above its
    parent), i.e. samples that are incoherent at some threshold. Report both: a model can be 0% incoherent at
    0.5 and 100% incoherent at some threshold, and AUROC / AU(PRC) average over every threshold.

    Args:
        preds: ``(N, C)`` scores; NumPy accepted.
        hierarchy: the label hierarchy.
        threshold: decision threshold in ``(0, 1)``, or ``None`` for any threshold.
        from_logits: ``preds`` are logits (compared without a sigmoid, see :func:`edge_violations`).
        validate_args: refuse NaN predictions (see :func:`edge_violations`).

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> p = torch.tensor([[0.4, 0.6], [0.9, 0.3], [0.7, 0.8]])
        >>> violation_rate(p, h), violation_rate(p, h, threshold=None)
        (tensor(0.3333), tensor(0.6667))
    """
    flags = sample_violations(preds, hierarchy, threshold, from_logits, validate_args)
    return flags.float().sum() / max(flags.numel(), 1)


def edge_violation_counts(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                          from_logits: bool = False, validate_args: bool = True) -> Tensor:
    """Long ``(E,)``: how many samples violate each edge (edges in ``hierarchy.edges`` order; arguments as
    :func:`edge_violations`).

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b", "c"]})
        >>> p = torch.tensor([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
        >>> edge_violation_counts(p, h), edge_violation_counts(p, h, threshold=None)
        (tensor([1, 0]), tensor([2, 1]))
    """
    return edge_violations(preds, hierarchy, threshold, from_logits, validate_args).sum(0)


def edge_violation_rates(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                         from_logits: bool = False, validate_args: bool = True) -> Tensor:
    """Float ``(E,)``: the fraction of samples violating each edge (0 for an empty batch; arguments as
    :func:`edge_violations`)."""
    flags = edge_violations(preds, hierarchy, threshold, from_logits, validate_args)
    return flags.float().sum(0) / max(flags.shape[0], 1)


def consistency_report(preds: Any, hierarchy: Hierarchy, threshold: float = 0.5,
                       from_logits: bool = False) -> pd.DataFrame:
    """One row per edge, in ``hierarchy.edges`` order.

    Columns: ``parent``, ``child`` (label names), ``violations`` and ``rate`` (samples violating the edge at
    ``threshold``: count and fraction), ``violations_any`` and ``rate_any`` (samples with
    ``score(child) > score(parent)``). NaN predictions are a ``ValueError`` naming the label.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b", "c"]})
        >>> p = torch.tensor([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
        >>> consistency_report(p, h).round(3)
          parent child  violations   rate  violations_any  rate_any
        0      a     b           1  0.333               2     0.667
        1      a     c           0  0.000               1     0.333
    """
    import pandas as pd

    if threshold is None:
        raise ValueError("consistency_report needs a threshold in (0, 1); the any-threshold columns are always "
                         "included")
    at_t = edge_violations(preds, hierarchy, threshold, from_logits)  # validates preds once
    anywhere = edge_violations(preds, hierarchy, None, from_logits, validate_args=False)
    n = max(at_t.shape[0], 1)
    counts_t = at_t.sum(0).cpu()
    counts_any = anywhere.sum(0).cpu()
    report: pd.DataFrame = pd.DataFrame({
        "parent": [p for p, _ in hierarchy.edges],
        "child": [c for _, c in hierarchy.edges],
        "violations": counts_t.numpy(),
        "rate": (counts_t.double() / n).numpy(),
        "violations_any": counts_any.numpy(),
        "rate_any": (counts_any.double() / n).numpy(),
    })
    return report
