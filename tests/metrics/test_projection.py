"""Tests for hierloss.metrics.projection.coherent against dense references, loops and by property."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss.metrics import coherent, violation_rate
from tests.test_hierarchy import random_dags


def _dense_max(p: np.ndarray, h: Hierarchy) -> np.ndarray:
    """C-HMCNN's dense form: R[i, j] = 1 when j is i or a descendant of i; out[n, i] = max_j R[i, j] · p[n, j]."""
    anc = h.ancestor_matrix().numpy()  # anc[d, a]: a is a proper ancestor of d
    r = anc.T | np.eye(h.num_labels, dtype=bool)
    return np.where(r[None, :, :], p[:, None, :], -np.inf).max(axis=2)


def _dense_min(p: np.ndarray, h: Hierarchy) -> np.ndarray:
    anc = h.ancestor_matrix().numpy() | np.eye(h.num_labels, dtype=bool)
    return np.where(anc[None, :, :], p[:, None, :], np.inf).min(axis=2)


def _loop(p: np.ndarray, h: Hierarchy, method: str) -> np.ndarray:
    """Label by label over h.descendants / h.ancestors (graph walks, no matrices)."""
    out = p.copy()
    for j, label in enumerate(h.labels):
        related = h.descendants(label) if method == "max" else h.ancestors(label)
        cols = [j, *(h.index(x) for x in related)]
        out[:, j] = p[:, cols].max(1) if method == "max" else p[:, cols].min(1)
    return out


@settings(max_examples=60, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.floats(0.01, 0.99), st.booleans())
def test_properties_and_references(h: Hierarchy, seed: int, threshold: float, rounded: bool) -> None:
    """Dense- and loop-equal; zero violations at any threshold; idempotent; 'max' never lowers, 'min' never raises."""
    p = np.random.default_rng(seed).random((6, h.num_labels))
    p = np.round(p, 1) if rounded else p
    up, down = coherent(p, h, "max"), coherent(p, h, "min")
    assert isinstance(up, np.ndarray) and isinstance(down, np.ndarray)
    np.testing.assert_array_equal(up, _dense_max(p, h))
    np.testing.assert_array_equal(down, _dense_min(p, h))
    np.testing.assert_array_equal(up, _loop(p, h, "max"))
    np.testing.assert_array_equal(down, _loop(p, h, "min"))
    for out in (up, down):
        assert violation_rate(out, h, threshold=None).item() == 0.0
        assert violation_rate(out, h, threshold=threshold).item() == 0.0
    np.testing.assert_array_equal(coherent(up, h, "max"), up)
    np.testing.assert_array_equal(coherent(down, h, "min"), down)
    assert (up >= p).all() and (down <= p).all()


def test_chain_and_diamond_by_hand() -> None:
    """A diamond a→{b,c}→d: 'max' lifts a, b, c to d's score; 'min' caps d at the smallest ancestor."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"]})
    p = torch.tensor([[0.1, 0.5, 0.3, 0.9]])  # columns a, b, c, d
    assert coherent(p, h, "max").tolist() == [pytest.approx([0.9, 0.9, 0.9, 0.9])]
    assert coherent(p, h, "min").tolist() == [pytest.approx([0.1, 0.1, 0.1, 0.1])]
    q = torch.tensor([[0.8, 0.2, 0.6, 0.4]])
    assert coherent(q, h, "max").tolist() == [pytest.approx([0.8, 0.4, 0.6, 0.4])]
    assert coherent(q, h, "min").tolist() == [pytest.approx([0.8, 0.2, 0.6, 0.2])]


def test_tensor_keeps_gradient_dtype_and_1d() -> None:
    """Tensors stay tensors with gradients to the arg-max and their dtype; 1-D inputs and logits work."""
    h = Hierarchy.from_dict({"a": ["b"]})
    x = torch.tensor([[0.2, 0.7]], requires_grad=True)
    coherent(x, h).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [[0.0, 2.0]]
    assert coherent(torch.tensor([0.9, 0.1]), h, "min").tolist() == pytest.approx([0.9, 0.1])
    assert coherent(torch.tensor([[0.0, 1.0]], dtype=torch.float16), h).dtype == torch.float16
    logits = torch.tensor([[-2.0, 3.0]])
    torch.testing.assert_close(torch.sigmoid(coherent(logits, h)), coherent(torch.sigmoid(logits), h))


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_compiled_equals_eager(backend: str) -> None:
    """Under torch.compile(fullgraph=True) and no grad, both methods give eager's scores, contiguous, for (N, C) and
    (C,) inputs."""
    # a hierarchy equal to no other of the test session, whose plans the eager calls build outside the compiled region
    h = Hierarchy.from_dict({"r": ["s", "t"], "s": ["u"], "t": ["u", "v"], "w": []})
    for shape in ((7, h.num_labels), (h.num_labels,)):
        x = torch.rand(shape)
        for method in ("max", "min"):
            want = coherent(x, h, method=method)
            torch._dynamo.reset()
            compiled = torch.compile(lambda p, m=method: coherent(p, h, method=m), fullgraph=True, backend=backend)
            with torch.no_grad():
                got = compiled(x)
            torch.testing.assert_close(got, want)
            assert got.is_contiguous()


def test_real_go_hierarchy_equals_dense(shared_data: Path) -> None:
    """On the cellcycle_GO DAG (4,125 labels, 5,824 edges) both methods equal the dense form, row by row."""
    from hierloss.datasets import load_hmc_arff

    h = load_hmc_arff(shared_data / "hmc" / "cellcycle_GO" / "cellcycle_GO.train.arff").hierarchy
    p = np.random.default_rng(0).random((2, h.num_labels)).astype(np.float32)
    up, down = coherent(p, h, "max"), coherent(p, h, "min")
    for n in range(2):  # one row at a time: the dense (1, C, C) float32 tensor is 68 MB
        np.testing.assert_array_equal(up[n:n + 1], _dense_max(p[n:n + 1], h))
        np.testing.assert_array_equal(down[n:n + 1], _dense_min(p[n:n + 1], h))
    assert violation_rate(up, h, threshold=None).item() == 0.0
    assert violation_rate(down, h, threshold=None).item() == 0.0


def test_errors() -> None:
    """Unknown methods, wrong widths and wrong ranks are named."""
    h = Hierarchy.from_dict({"a": ["b"]})
    with pytest.raises(ValueError, match="method must be 'max' or 'min', got 'mean'"):
        coherent(torch.zeros(1, 2), h, "mean")
    with pytest.raises(ValueError, match=r"Expected `preds` of shape \(N, 2\) or \(2,\), got \(1, 3\)"):
        coherent(torch.zeros(1, 3), h)
    with pytest.raises(ValueError, match=r"Expected `preds` of shape \(N, 2\) or \(2,\), got \(1, 1, 2\)"):
        coherent(torch.zeros(1, 1, 2), h)
    with pytest.raises(TypeError, match="`preds` must be a torch tensor or a NumPy array, got object"):
        coherent(object(), h)


def test_nan_scores_are_refused_naming_the_label() -> None:
    """A NaN score is refused (naming its label and count, for 2-D and 1-D input) instead of spreading to the
    ancestors; validate_args=False lets it through, as the max over descendants does."""
    h = Hierarchy.from_dict({"a": ["b"], "b": ["c"]})
    scores = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, float("nan")]])
    for method in ("max", "min"):
        with pytest.raises(ValueError, match=r"`preds` column 2 \('c'\) holds 1 NaN value\(s\); it would spread"):
            coherent(scores, h, method)
        with pytest.raises(ValueError, match=r"column 2 \('c'\) holds 1 NaN"):
            coherent(scores[1].numpy(), h, method)
    assert torch.isnan(coherent(scores, h, validate_args=False)[1]).all()
