"""Tests for hierloss.metrics.hierarchical_prf against a set-based reference and scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_fscore_support

from hierloss import Hierarchy
from hierloss.metrics import hierarchical_prf
from tests.test_hierarchy import random_dags


def _augment(h: Hierarchy, row: np.ndarray) -> set[str]:
    names = {h.labels[j] for j in np.flatnonzero(row)}
    return names | {a for n in names for a in h.ancestors(n)}


def _ratio(a: float, b: float, zd: float) -> float:
    return a / b if b else zd


def _prf(inter: float, n_pred: float, n_true: float, zd: float) -> tuple[float, float, float]:
    """Precision, recall, F1 with scikit-learn's zero-division rule (F = zd only if both sets are empty)."""
    return _ratio(inter, n_pred, zd), _ratio(inter, n_true, zd), _ratio(2 * inter, n_pred + n_true, zd)


def _reference(p: np.ndarray, y: np.ndarray, h: Hierarchy, average: str, zd: float) -> tuple[float, ...]:
    """Python sets of label names; micro sums over samples, samples averages per sample, macro per label."""
    sets = [(_augment(h, p[n] > 0.5), _augment(h, y[n])) for n in range(len(p))]
    if average == "micro":
        inter = sum(len(a & b) for a, b in sets)
        return _prf(inter, sum(len(a) for a, _ in sets), sum(len(b) for _, b in sets), zd)
    if average == "samples":
        per = [_prf(len(a & b), len(a), len(b), zd) for a, b in sets]
    else:
        per = [_prf(sum(lab in a and lab in b for a, b in sets), sum(lab in a for a, _ in sets),
                    sum(lab in b for _, b in sets), zd) for lab in h.labels]
    return tuple(float(np.mean([x[k] for x in per])) for k in range(3))


@settings(max_examples=50, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.sampled_from(["micro", "macro", "samples"]),
       st.sampled_from([0.0, 1.0]), st.integers(1, 8))
def test_matches_set_reference_and_sklearn(h: Hierarchy, seed: int, average: str, zd: float, n: int) -> None:
    """hP, hR, hF equal Python-set arithmetic and scikit-learn on the ancestor-augmented 0/1 matrices (1e-6)."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, h.num_labels)) * (rng.random((n, h.num_labels)) < 0.4)
    y = (rng.random((n, h.num_labels)) < 0.2).astype(int)
    got = [float(v) for v in hierarchical_prf(p, y, h, average=average, zero_division=zd)]
    assert got == pytest.approx(_reference(p, y, h, average, zd), abs=1e-12)
    if h.num_labels < 2:  # scikit-learn reads a single column as a binary problem, not as multi-label
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = precision_recall_fscore_support(h.propagate(y), h.propagate((p > 0.5).astype(int)), average=average,
                                               zero_division=zd)[:3]
    assert got == pytest.approx([float(v) for v in want], abs=1e-6)


def test_same_short_name_stays_distinct() -> None:
    """'1/1' under '1' and '2/1' under '2' are different nodes: predicting one earns no credit for the other."""
    h = Hierarchy.from_edges([("1", "1/1"), ("2", "2/1")])
    p = np.array([[0.0, 0.0, 0.9, 0.9]])  # columns: 1, 1/1, 2, 2/1
    y = np.array([[0, 1, 0, 0]])  # truth 1/1, augmented to {1, 1/1}
    assert [float(v) for v in hierarchical_prf(p, y, h)] == [0.0, 0.0, 0.0]


def test_partial_credit_for_shared_ancestors() -> None:
    """Predicting a sibling earns credit for the shared parent: {a, b} against {a, c} gives 1/2 each."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    got = hierarchical_prf([[0.0, 0.9, 0.0], [0.9, 0.9, 0.0]], [[0, 0, 1], [0, 1, 0]], h)
    assert [float(v) for v in got] == pytest.approx([3 / 4, 3 / 4, 3 / 4])  # (1 + 2) / (2 + 2) each


def test_zero_division() -> None:
    """Empty sets take zero_division; disjoint non-empty sets give F = 0 even with zero_division=1."""
    h = Hierarchy.from_edges([("a", "b")], labels=["a", "b", "c"])
    empty = np.zeros((2, 3))
    for average in ("micro", "macro", "samples"):
        assert [float(v) for v in hierarchical_prf(empty, empty, h, average, zero_division=1.0)] == [1.0, 1.0, 1.0]
        assert [float(v) for v in hierarchical_prf(empty, empty, h, average)] == [0.0, 0.0, 0.0]
    disjoint = hierarchical_prf(np.array([[0.0, 0.0, 0.9]]), np.array([[0, 1, 0]]), h, zero_division=1.0)
    assert [float(v) for v in disjoint] == [0.0, 0.0, 0.0]
    nothing_predicted = hierarchical_prf(np.zeros((1, 3)), np.array([[1, 0, 0]]), h, zero_division=1.0)
    assert [float(v) for v in nothing_predicted] == [1.0, 0.0, 0.0]
    no_samples = hierarchical_prf(np.zeros((0, 3)), np.zeros((0, 3)), h, "samples", zero_division=0.5)
    assert [float(v) for v in no_samples] == [0.5, 0.5, 0.5]


def test_errors() -> None:
    """Bad averages, thresholds, shapes and non-0/1 targets are errors naming the offender."""
    h = Hierarchy.from_edges([("a", "b")])
    empty = np.zeros((2, 2))
    with pytest.raises(ValueError, match="average must be 'micro', 'macro' or 'samples', got 'weighted'"):
        hierarchical_prf(empty, empty, h, average="weighted")
    with pytest.raises(ValueError, match=r"`target` column 1 holds 2\.0; metrics expect 0/1 targets"):
        hierarchical_prf(empty, np.array([[0.0, 2.0], [0.0, 0.0]]), h)
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(2, 2\) like `preds`, got \(2, 3\)"):
        hierarchical_prf(empty, np.zeros((2, 3)), h)
    with pytest.raises(ValueError, match=r"Expected `preds.shape\[1\]` to be 2 \(hierarchy.num_labels\), got 3"):
        hierarchical_prf(np.zeros((2, 3)), np.zeros((2, 3)), h)
    with pytest.raises(TypeError, match=r"threshold must be a number in \(0, 1\), got NoneType"):
        hierarchical_prf(empty, empty, h, threshold=None)  # type: ignore[arg-type]


def test_nan_predictions_are_refused() -> None:
    """A NaN score is a ValueError naming its label and count, not a silently unpredicted label."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = np.array([[float("nan"), 0.9, 0.1]])
    with pytest.raises(ValueError, match=r"`preds` column 0 \('a'\) holds 1 NaN value\(s\)"):
        hierarchical_prf(p, np.array([[1, 1, 0]]), h)


@pytest.mark.parametrize("threshold", [1.5, -1, float("nan"), 0, 1.0])
def test_threshold_rule_of_the_violation_metrics(threshold: float) -> None:
    """Thresholds outside (0, 1), NaN included, are refused with the same message as the violation metrics."""
    h = Hierarchy.from_edges([("a", "b")])
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got"):
        hierarchical_prf(np.zeros((2, 2)), np.zeros((2, 2)), h, threshold=threshold)


@pytest.mark.parametrize("zero_division", ["warn", None, True])
def test_zero_division_must_be_a_number(zero_division: object) -> None:
    """zero_division other than a number (scikit-learn's 'warn' included) is a TypeError quoting it."""
    h = Hierarchy.from_edges([("a", "b")])
    with pytest.raises(TypeError, match=rf"zero_division must be a number .*got {zero_division!r}"):
        hierarchical_prf(np.zeros((2, 2)), np.zeros((2, 2)), h, zero_division=zero_division)  # type: ignore[arg-type]


def test_zero_division_nan_like_sklearn() -> None:
    """zero_division=nan is accepted, as scikit-learn accepts np.nan: an empty predicted set gives hP = nan."""
    h = Hierarchy.from_edges([("a", "b")])
    p, r, f = hierarchical_prf(np.zeros((1, 2)), np.array([[1, 0]]), h, zero_division=float("nan"))
    assert np.isnan(p.item()) and r.item() == 0.0 and f.item() == 0.0


def test_from_logits_equals_sigmoid_first() -> None:
    """from_logits=True agrees with thresholding the sigmoids on moderate logits (the exact rule near logit(t) and for
    large logits is tested against decimals in tests/test_probe_columns.py)."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    logits = np.random.default_rng(0).normal(size=(30, 3))
    probs = 1 / (1 + np.exp(-logits))
    y = (np.random.default_rng(1).random((30, 3)) < 0.5).astype(int)
    for average in ("micro", "macro", "samples"):
        got = hierarchical_prf(logits, y, h, average, from_logits=True)
        want = hierarchical_prf(probs, y, h, average)
        assert [float(v) for v in got] == pytest.approx([float(v) for v in want])


def test_unvalidated_prf_does_not_synchronise() -> None:
    """With validate_args=False hierarchical_prf runs on data-less 'meta' tensors (nothing is read back)."""
    import torch

    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    p, y = torch.rand(20, 4, device="meta"), torch.zeros(20, 4, dtype=torch.long, device="meta")
    with pytest.raises(RuntimeError, match="meta tensors"):  # the checks do read
        hierarchical_prf(p, y, h)
    for average in ("micro", "macro", "samples"):
        assert all(v.device.type == "meta" for v in hierarchical_prf(p, y, h, average, validate_args=False))
