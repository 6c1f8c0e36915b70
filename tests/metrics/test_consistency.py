"""Tests for hierloss.metrics.consistency against naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.metrics import consistency_report, edge_violations, violation_rate
from tests.test_hierarchy import random_dags


def _naive(p: np.ndarray, h: Hierarchy, threshold: float | None) -> np.ndarray:
    out = np.zeros((p.shape[0], h.num_edges), dtype=bool)
    for n in range(p.shape[0]):
        for e, (a, b) in enumerate(h.edge_indices):
            out[n, e] = p[n, b] > p[n, a] if threshold is None else (p[n, a] < threshold and p[n, b] > threshold)
    return out


@settings(max_examples=30, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.sampled_from([0.5, 0.3, None]))
def test_matches_naive_loop(h: Hierarchy, seed: int, threshold: float | None) -> None:
    """Per-edge flags, sample rate and report equal a loop over samples and edges."""
    p = np.round(np.random.default_rng(seed).random((9, h.num_labels)), 1)  # ties at the threshold included
    want = _naive(p, h, threshold)
    np.testing.assert_array_equal(edge_violations(p, h, threshold).numpy(), want)
    rate = violation_rate(torch.from_numpy(p), h, threshold)
    assert rate.item() == pytest.approx(want.any(1).mean())


def test_strict_inequalities_and_logits() -> None:
    """Scores equal to the threshold are not violations; from_logits applies a sigmoid first."""
    h = Hierarchy.from_edges([("a", "b")])
    assert violation_rate(torch.tensor([[0.5, 0.9], [0.2, 0.5]]), h).item() == 0.0
    assert violation_rate(torch.tensor([[-1.0, 2.0]]), h, from_logits=True).item() == 1.0
    assert violation_rate(torch.tensor([[0.3, 0.3]]), h, threshold=None).item() == 0.0
    assert violation_rate(torch.zeros(0, 2), h).item() == 0.0


def test_report() -> None:
    """consistency_report has one row per edge with both counts and rates."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = np.array([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
    report = consistency_report(p, h)
    assert report[["parent", "child"]].values.tolist() == [["a", "b"], ["a", "c"]]
    assert report["violations"].tolist() == [1, 0]
    assert report["violations_any"].tolist() == [2, 1]
    assert report["rate_any"].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_errors() -> None:
    """Wrong widths, thresholds and input types are reported."""
    h = Hierarchy.from_edges([("a", "b")])
    with pytest.raises(ValueError, match=r"Expected `preds.shape\[1\]` to be 2 \(hierarchy.num_labels\), got 3"):
        violation_rate(torch.zeros(4, 3), h)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\) or None, got 1\.0"):
        violation_rate(torch.zeros(4, 2), h, threshold=1.0)
    with pytest.raises(TypeError, match="must be a torch tensor or a NumPy array, got str"):
        violation_rate("preds", h)
