"""Tests for hierloss.metrics.hierarchical_prf against a set-based reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.metrics import hierarchical_prf
from tests.test_hierarchy import random_dags


def _augment(h: Hierarchy, row: np.ndarray) -> set[str]:
    names = {h.labels[j] for j in np.flatnonzero(row)}
    return names | {a for n in names for a in h.ancestors(n)}


def _reference(p: np.ndarray, y: np.ndarray, h: Hierarchy, average: str) -> tuple[float, float, float]:
    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    sets = [(_augment(h, p[n] > 0.5), _augment(h, y[n])) for n in range(len(p))]
    if average == "micro":
        inter = sum(len(a & b) for a, b in sets)
        hp, hr = ratio(inter, sum(len(a) for a, _ in sets)), ratio(inter, sum(len(b) for _, b in sets))
        return hp, hr, ratio(2 * hp * hr, hp + hr)
    per = []
    for a, b in sets:
        hp, hr = ratio(len(a & b), len(a)), ratio(len(a & b), len(b))
        per.append((hp, hr, ratio(2 * hp * hr, hp + hr)))
    return tuple(float(np.mean([x[k] for x in per])) for k in range(3))  # type: ignore[return-value]


@settings(max_examples=30, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.sampled_from(["micro", "macro"]))
def test_matches_set_reference(h: Hierarchy, seed: int, average: str) -> None:
    """hP, hR, hF equal a reference computed on Python sets of label names."""
    rng = np.random.default_rng(seed)
    p, y = rng.random((8, h.num_labels)), (rng.random((8, h.num_labels)) < 0.3).astype(int)
    got = [float(v) for v in hierarchical_prf(p, y, h, average=average)]
    assert got == pytest.approx(_reference(p, y, h, average))


def test_same_short_name_stays_distinct() -> None:
    """'1/1' under '1' and '2/1' under '2' are different nodes: predicting one is not credit for the other."""
    h = Hierarchy.from_edges([("1", "1/1"), ("2", "2/1")])
    p = np.array([[0.0, 0.0, 0.9, 0.9]])  # columns: 1, 1/1, 2, 2/1
    y = np.array([[1, 1, 0, 0]])
    assert [float(v) for v in hierarchical_prf(p, y, h)] == [0.0, 0.0, 0.0]


def test_zero_division_and_errors() -> None:
    """Empty sets take zero_division; bad averages and non-0/1 targets are errors."""
    h = Hierarchy.from_edges([("a", "b")])
    empty = np.zeros((2, 2))
    assert [float(v) for v in hierarchical_prf(empty, empty, h, zero_division=1.0)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="average must be 'micro' or 'macro', got 'weighted'"):
        hierarchical_prf(empty, empty, h, average="weighted")
    with pytest.raises(ValueError, match="`target` column 1 holds 2.0; metrics expect 0/1 targets"):
        hierarchical_prf(empty, np.array([[0.0, 2.0], [0.0, 0.0]]), h)
