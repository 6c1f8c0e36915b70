"""Tests for hierloss.propagation: level-wise max/min propagation against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.propagation import PropagationPlan, max_over_descendants, min_over_ancestors, propagate_levels
from tests.test_hierarchy import random_dags


def _dense_max(h: Hierarchy, x: np.ndarray) -> np.ndarray:
    """Reference: out[:, a] = max over a and every d with a among d's ancestors (loops)."""
    anc = h.ancestor_matrix().numpy()
    out = x.copy()
    for a in range(h.num_labels):
        for d in range(h.num_labels):
            if anc[d, a]:
                out[..., a] = np.maximum(out[..., a], x[..., d])
    return out


def _dense_min(h: Hierarchy, x: np.ndarray) -> np.ndarray:
    """Reference: out[:, d] = min over d and all its ancestors (loops)."""
    anc = h.ancestor_matrix().numpy()
    out = x.copy()
    for d in range(h.num_labels):
        for a in range(h.num_labels):
            if anc[d, a]:
                out[..., d] = np.minimum(out[..., d], x[..., a])
    return out


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1))
def test_matches_dense_reference(h: Hierarchy, seed: int) -> None:
    """Both passes equal the dense loop reference on random DAGs, for (N, C) and (C,) inputs."""
    x = np.random.default_rng(seed).random((5, h.num_labels))
    t = torch.from_numpy(x)
    np.testing.assert_allclose(max_over_descendants(t, h).numpy(), _dense_max(h, x))
    np.testing.assert_allclose(min_over_ancestors(t, h).numpy(), _dense_min(h, x))
    np.testing.assert_allclose(max_over_descendants(t[0], h).numpy(), _dense_max(h, x[:1])[0])


@settings(max_examples=30, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1))
def test_outputs_are_coherent(h: Hierarchy, seed: int) -> None:
    """After either pass every parent scores at least as high as each of its children."""
    x = torch.from_numpy(np.random.default_rng(seed).random((4, h.num_labels)))
    for out in (max_over_descendants(x, h), min_over_ancestors(x, h)):
        for p, c in h.edge_indices:
            assert bool((out[:, p] >= out[:, c]).all())


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_plans_group_edges_by_level(h: Hierarchy) -> None:
    """upward groups edges by the parent's height, downward by the child's depth, levels ascending and each level in
    canonical edge order (against a naive Python grouping)."""
    for plan, level, by_parent in ((PropagationPlan.upward(h), h.heights, True),
                                   (PropagationPlan.downward(h), h.depths, False)):
        groups: dict[int, list[tuple[int, int]]] = {}
        for p, c in h.edge_indices:
            groups.setdefault(level[p] if by_parent else level[c], []).append((c, p) if by_parent else (p, c))
        assert list(zip(plan.source.tolist(), plan.target.tolist())) == [e for k in sorted(groups) for e in groups[k]]
        assert plan.sizes == tuple(len(groups[k]) for k in sorted(groups))
        assert plan.reduce == ("amax" if by_parent else "amin")


def test_gradcheck_float64() -> None:
    """Gradients of both passes are correct (float64 gradcheck, distinct values so no ties)."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"]})
    x = torch.randperm(12, dtype=torch.float64).reshape(3, 4).div(12).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: max_over_descendants(v, h), (x,))
    assert torch.autograd.gradcheck(lambda v: min_over_ancestors(v, h), (x,))


def test_gradient_flows_to_the_argmax() -> None:
    """The gradient of a parent's propagated score reaches the descendant that holds the max."""
    h = Hierarchy.from_dict({"a": ["b"], "b": ["c"]})
    x = torch.tensor([[0.1, 0.2, 0.9]], requires_grad=True)
    max_over_descendants(x, h)[0, 0].backward()
    assert x.grad is not None
    assert x.grad.tolist() == [[0.0, 0.0, 1.0]]


def test_no_edges_is_identity() -> None:
    """Without edges both passes return the input values."""
    h = Hierarchy(["a", "b"])
    x = torch.rand(3, 2)
    assert torch.equal(max_over_descendants(x, h), x)
    assert torch.equal(min_over_ancestors(x, h), x)


def test_scalar_rejected() -> None:
    """A 0-d tensor has no label dimension and is rejected."""
    with pytest.raises(ValueError, match="Expected `values` with a label dimension"):
        propagate_levels(torch.tensor(1.0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                         (), "amax")
