"""Tests for hierloss.metrics.projection.coherent against dense references and by property."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.metrics import coherent, violation_rate
from tests.test_hierarchy import random_dags


def _dense_max(p: np.ndarray, h: Hierarchy) -> np.ndarray:
    """C-HMCNN's dense form: R[i, j] = 1 when j is i or a descendant of i; out = max_j R[i, j] · p[j]."""
    anc = h.ancestor_matrix().numpy()  # anc[d, a]: a is an ancestor of d
    r = anc.T | np.eye(h.num_labels, dtype=bool)
    return np.where(r[None, :, :], p[:, None, :], -np.inf).max(axis=2)


def _dense_min(p: np.ndarray, h: Hierarchy) -> np.ndarray:
    anc = h.ancestor_matrix().numpy() | np.eye(h.num_labels, dtype=bool)
    return np.where(anc[None, :, :], p[:, None, :], np.inf).min(axis=2)


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1))
def test_properties_and_dense_reference(h: Hierarchy, seed: int) -> None:
    """Zero violations at any threshold, idempotent, 'max' never lowers / 'min' never raises, dense-equal."""
    p = np.random.default_rng(seed).random((6, h.num_labels))
    up, down = coherent(p, h, "max"), coherent(p, h, "min")
    assert isinstance(up, np.ndarray)
    np.testing.assert_array_equal(up, _dense_max(p, h))
    np.testing.assert_array_equal(down, _dense_min(p, h))
    for out in (up, down):
        assert violation_rate(out, h, threshold=None).item() == 0.0
    np.testing.assert_array_equal(coherent(up, h, "max"), up)
    np.testing.assert_array_equal(coherent(down, h, "min"), down)
    assert (up >= p).all() and (down <= p).all()


def test_tensor_keeps_gradient_and_1d() -> None:
    """Tensors stay tensors with gradients; 1-D inputs work."""
    h = Hierarchy.from_dict({"a": ["b"]})
    x = torch.tensor([[0.2, 0.7]], requires_grad=True)
    coherent(x, h).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [[0.0, 2.0]]
    assert coherent(torch.tensor([0.9, 0.1]), h, "min").tolist() == pytest.approx([0.9, 0.1])


def test_errors() -> None:
    """Unknown methods and wrong widths are named."""
    h = Hierarchy.from_dict({"a": ["b"]})
    with pytest.raises(ValueError, match="method must be 'max' or 'min', got 'mean'"):
        coherent(torch.zeros(1, 2), h, "mean")
    with pytest.raises(ValueError, match=r"Expected `probs` of shape \(N, 2\) or \(2,\), got \(1, 3\)"):
        coherent(torch.zeros(1, 3), h)
