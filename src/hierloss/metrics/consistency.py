"""How often predictions break the hierarchy: per sample, per edge, and as a report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hierloss.hierarchy import Hierarchy
from hierloss.metrics._inputs import scores_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["consistency_report", "edge_violations", "sample_violations", "violation_rate"]


def edge_violations(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                    from_logits: bool = False) -> Tensor:
    """Bool ``(N, E)``: whether sample ``n`` violates edge ``e`` (edges in ``hierarchy.edges`` order).

    With a ``threshold`` the test is the reference's, strict on both sides: ``parent < t and child > t``. With
    ``threshold=None`` it is incoherence at *some* threshold: ``score(child) > score(parent)`` — the incoherence
    that ranking metrics such as AUROC and AU(PRC) see.

    Args:
        preds: ``(N, C)`` scores (probabilities, or logits with ``from_logits=True``); NumPy accepted.
        hierarchy: the label hierarchy.
        threshold: decision threshold in ``(0, 1)``, or ``None`` for any threshold.
        from_logits: apply a sigmoid to ``preds`` first.
    """
    if threshold is not None and not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1) or None, got {threshold!r}")
    scores = scores_for(preds, hierarchy, from_logits)
    ei = hierarchy.edge_index.to(scores.device)
    parent, child = scores.index_select(1, ei[0]), scores.index_select(1, ei[1])
    if threshold is None:
        return child > parent
    return (parent < threshold) & (child > threshold)


def sample_violations(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                      from_logits: bool = False) -> Tensor:
    """Bool ``(N,)``: whether each sample violates at least one edge (see :func:`edge_violations`)."""
    return edge_violations(preds, hierarchy, threshold, from_logits).any(dim=1)


def violation_rate(preds: Any, hierarchy: Hierarchy, threshold: float | None = 0.5,
                   from_logits: bool = False) -> Tensor:
    """Fraction of samples with at least one violated edge (a 0-d float tensor; 0 for an empty batch).

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> p = torch.tensor([[0.4, 0.6], [0.9, 0.3], [0.7, 0.8]])
        >>> violation_rate(p, h), violation_rate(p, h, threshold=None)
        (tensor(0.3333), tensor(0.6667))
    """
    flags = sample_violations(preds, hierarchy, threshold, from_logits)
    return flags.float().mean() if flags.numel() else flags.new_zeros((), dtype=torch.float32)


def consistency_report(preds: Any, hierarchy: Hierarchy, threshold: float = 0.5,
                       from_logits: bool = False) -> pd.DataFrame:
    """One row per edge: ``parent, child, violations, rate, violations_any, rate_any``.

    ``violations``/``rate`` count samples violating the edge at ``threshold``; ``violations_any``/``rate_any``
    count samples with ``score(child) > score(parent)``.
    """
    import pandas as pd

    at_t = edge_violations(preds, hierarchy, threshold, from_logits)
    anywhere = edge_violations(preds, hierarchy, None, from_logits)
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
