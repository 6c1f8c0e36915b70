"""Tests for hierloss.metrics.consistency against naive loops over samples and edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.metrics import (
    consistency_report,
    edge_violation_counts,
    edge_violation_rates,
    edge_violations,
    sample_violations,
    violation_rate,
)
from tests.test_hierarchy import random_dags


def _naive(p: np.ndarray, h: Hierarchy, threshold: float | None) -> np.ndarray:
    out = np.zeros((p.shape[0], h.num_edges), dtype=bool)
    for n in range(p.shape[0]):
        for e, (parent, child) in enumerate(h.edges):
            a, b = p[n, h.index(parent)], p[n, h.index(child)]
            out[n, e] = b > a if threshold is None else (a < threshold and b > threshold)
    return out


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.sampled_from([0.5, 0.3, 0.9, None]), st.integers(0, 9))
def test_matches_naive_loop(h: Hierarchy, seed: int, threshold: float | None, n: int) -> None:
    """Per-edge flags, counts, rates, sample flags, the rate and the report equal loops over samples and edges."""
    p = np.round(np.random.default_rng(seed).random((n, h.num_labels)), 1)  # ties, also at the threshold
    want = _naive(p, h, threshold)
    np.testing.assert_array_equal(edge_violations(p, h, threshold).numpy(), want)
    np.testing.assert_array_equal(sample_violations(p, h, threshold).numpy(), want.any(1))
    np.testing.assert_array_equal(edge_violation_counts(p, h, threshold).numpy(), want.sum(0))
    np.testing.assert_allclose(edge_violation_rates(p, h, threshold).numpy(), want.sum(0) / max(n, 1), rtol=1e-6)
    assert violation_rate(torch.from_numpy(p), h, threshold).item() == pytest.approx(want.any(1).sum() / max(n, 1))
    if threshold is not None:
        report = consistency_report(p, h, threshold)
        assert list(zip(report["parent"], report["child"])) == list(h.edges)
        np.testing.assert_array_equal(report["violations"], want.sum(0))
        np.testing.assert_array_equal(report["violations_any"], _naive(p, h, None).sum(0))
        np.testing.assert_allclose(report["rate_any"], _naive(p, h, None).sum(0) / max(n, 1))


def test_strict_inequalities_logits_and_empty_batch() -> None:
    """Scores equal to the threshold are not violations; from_logits reads logits; an empty batch rates 0."""
    h = Hierarchy.from_edges([("a", "b")])
    assert violation_rate(torch.tensor([[0.5, 0.9], [0.2, 0.5]]), h).item() == 0.0
    logits = torch.tensor([[-0.1, 0.3]])  # sigmoid: 0.475 (parent) and 0.574 (child)
    assert violation_rate(logits, h, from_logits=True).item() == 1.0
    assert violation_rate(logits, h).item() == 0.0  # read as probabilities, neither side of 0.5 is crossed
    assert violation_rate(torch.tensor([[0.3, 0.3]]), h, threshold=None).item() == 0.0
    assert violation_rate(torch.zeros(0, 2), h).item() == 0.0
    assert edge_violation_rates(torch.zeros(0, 2), h).tolist() == [0.0]


def test_both_rates_differ_on_scores_coherent_at_half() -> None:
    """Scores all below 0.5 break no decision at 0.5, yet every sample is incoherent at some threshold."""
    h = Hierarchy.from_dict({"a": ["b"]})
    p = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    assert violation_rate(p, h).item() == 0.0
    assert violation_rate(p, h, threshold=None).item() == 1.0
    assert violation_rate(p, h, threshold=0.15).item() == 0.5


def test_report_example() -> None:
    """consistency_report has one row per edge with both counts and rates (hand-computed)."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = np.array([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
    report = consistency_report(p, h)
    assert list(report.columns) == ["parent", "child", "violations", "rate", "violations_any", "rate_any"]
    assert report[["parent", "child"]].values.tolist() == [["a", "b"], ["a", "c"]]
    assert report["violations"].tolist() == [1, 0]
    assert report["rate"].tolist() == pytest.approx([1 / 3, 0.0])
    assert report["violations_any"].tolist() == [2, 1]
    assert report["rate_any"].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_errors() -> None:
    """Wrong shapes, thresholds and input types are reported, naming the offender."""
    h = Hierarchy.from_edges([("a", "b")])
    with pytest.raises(ValueError, match=r"Expected `preds.shape\[1\]` to be 2 \(hierarchy.num_labels\), got 3"):
        violation_rate(torch.zeros(4, 3), h)
    with pytest.raises(ValueError, match=r"Expected `preds` of shape \(N, C\), got \(2,\)"):
        violation_rate(torch.zeros(2), h)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\) or None, got 1\.0"):
        violation_rate(torch.zeros(4, 2), h, threshold=1.0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\) or None, got 0"):
        edge_violations(torch.zeros(4, 2), h, threshold=0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\) or None, got nan"):
        violation_rate(torch.zeros(4, 2), h, threshold=float("nan"))
    with pytest.raises(TypeError, match=r"threshold must be a number in \(0, 1\) or None, got str"):
        edge_violation_counts(torch.zeros(4, 2), h, threshold="0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"threshold must be a number in \(0, 1\) or None, got bool"):
        sample_violations(torch.zeros(4, 2), h, threshold=True)
    with pytest.raises(TypeError, match="`preds` must be a torch tensor or a NumPy array, got str"):
        violation_rate("preds", h)
    with pytest.raises(ValueError, match="consistency_report needs a threshold in"):
        consistency_report(torch.zeros(4, 2), h, threshold=None)  # type: ignore[arg-type]


def test_nan_predictions_are_refused() -> None:
    """A NaN prediction is a ValueError naming its label and the count, not a silent 'no violation'."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = torch.tensor([[0.4, float("nan"), 0.1], [0.9, float("nan"), 0.2], [0.3, 0.6, 0.1]])
    for fn in (edge_violations, sample_violations, violation_rate, edge_violation_counts, edge_violation_rates):
        for threshold in (0.5, None):
            with pytest.raises(ValueError, match=r"`preds` column 1 \('b'\) holds 2 NaN value\(s\)"):
                fn(p, h, threshold)
    with pytest.raises(ValueError, match=r"`preds` column 1 \('b'\) holds 2 NaN value\(s\)"):
        consistency_report(p.numpy(), h)


def test_unvalidated_violations_do_not_synchronise() -> None:
    """With validate_args=False the violation metrics run on data-less 'meta' tensors (nothing is read back)."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    p = torch.rand(20, 4, device="meta")
    with pytest.raises(RuntimeError, match="meta tensors"):  # the NaN check does read
        violation_rate(p, h)
    for threshold in (0.5, None):
        assert edge_violations(p, h, threshold, validate_args=False).shape == (20, 3)
        assert sample_violations(p, h, threshold, validate_args=False).device.type == "meta"
        assert violation_rate(p, h, threshold, from_logits=True, validate_args=False).device.type == "meta"
        assert edge_violation_counts(p, h, threshold, validate_args=False).device.type == "meta"
        assert edge_violation_rates(p, h, threshold, validate_args=False).device.type == "meta"
