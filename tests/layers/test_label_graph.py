"""Tests for hierloss.layers.label_graph: identity at init, a naive coupling loop, sparsity masks and training."""

from __future__ import annotations

import math

import pytest
import torch

from hierloss import AsymmetricLoss, Hierarchy, HierarchyPenalty, LabelGraphRefinement
from hierloss.functional import label_graph_refinement


@pytest.fixture
def h() -> Hierarchy:
    """A small hierarchy: a → b → c, a → d, plus an isolated label."""
    return Hierarchy.from_dict({"a": ["b", "d"], "b": ["c"], "iso": []})


def naive_refine(z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """z'_i = z_i + Σ_{j≠i} W_ij σ(z_j), Python loops (float64)."""
    out = z.clone()
    for n in range(z.shape[0]):
        for i in range(z.shape[1]):
            out[n, i] = float(z[n, i]) + sum(float(W[i, j]) / (1 + math.exp(-float(z[n, j])))
                                            for j in range(z.shape[1]) if j != i)
    return out


@pytest.mark.parametrize("sparsity", ["edges", "closure"])
def test_identity_at_initialisation(h: Hierarchy, sparsity: str) -> None:
    """W starts at zero, so the layer returns its input and the L1 penalty is 0."""
    for layer in (LabelGraphRefinement(5), LabelGraphRefinement(5, h, sparsity=sparsity)):
        z = torch.randn(4, 5)
        assert torch.equal(layer(z), z)
        assert layer.regularization() == 0


def test_dense_matches_naive_and_ignores_diagonal() -> None:
    """The dense layer equals the loop with a random W; the diagonal has no effect and gets no gradient."""
    torch.manual_seed(0)
    layer = LabelGraphRefinement(4, l1=0.5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 4))
    z = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(z), naive_refine(z, layer.weight.detach()))
    layer(z).sum().backward()
    assert layer.weight.grad is not None and bool((torch.diagonal(layer.weight.grad) == 0).all())
    torch.testing.assert_close(layer.regularization(), 0.5 * layer.weight.abs().sum())


@pytest.mark.parametrize("sparsity", ["edges", "closure"])
def test_sparse_matches_naive_and_masks_pairs(h: Hierarchy, sparsity: str) -> None:
    """With a hierarchy, couplings exist exactly along edges (or closure pairs) in both directions."""
    layer = LabelGraphRefinement(5, h, sparsity=sparsity).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape[0]))
    W = layer.coupling_matrix().detach()
    graph = h.closure() if sparsity == "closure" else h
    allowed = {pair for p, c in graph.edge_indices for pair in ((p, c), (c, p))}
    for i in range(5):
        for j in range(5):
            assert (W[i, j] != 0) == ((i, j) in allowed)
    z = torch.randn(6, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(z), naive_refine(z, W))
    torch.testing.assert_close(label_graph_refinement(z, W), layer(z))
    assert layer.weight.numel() == 2 * graph.num_edges


def test_learns_a_coupling() -> None:
    """A few Adam steps on targets where label 1 copies label 0 grow W[1, 0], the coupling the data supports."""
    torch.manual_seed(0)
    layer = LabelGraphRefinement(2, l1=1e-4)
    z = torch.randn(256, 2) * 3
    target = (z[:, :1] > 0).float().expand(256, 2)  # label 1 is positive exactly when label 0's logit is
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    bce = torch.nn.BCEWithLogitsLoss()
    for _ in range(100):
        opt.zero_grad()
        loss = bce(layer(z), target) + layer.regularization()
        loss.backward()
        opt.step()
    W = layer.coupling_matrix().detach()
    assert W[1, 0] > 1.0
    assert abs(W[0, 1]) < W[1, 0]


def test_gradcheck(h: Hierarchy) -> None:
    """float64 gradcheck of the functional form w.r.t. logits and weights, dense and sparse."""
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    dense = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(label_graph_refinement, (z, dense))
    pairs = LabelGraphRefinement(5, h).pair_index
    assert pairs is not None
    weights = torch.randn(pairs.shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: label_graph_refinement(x, w, h), (z, weights))


def test_extreme_and_fp16(h: Hierarchy) -> None:
    """±100 logits stay finite; fp16 inputs give fp16 outputs close to float64."""
    layer = LabelGraphRefinement(5, h)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    z = 100 * torch.sign(torch.randn(4, 5))
    assert bool(torch.isfinite(layer(z)).all())
    zh = torch.randn(4, 5).half()
    out = layer(zh)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), layer.double()(zh.double()), rtol=2e-3, atol=2e-3)


def test_compile_fullgraph(h: Hierarchy) -> None:
    """Both forms compile with fullgraph=True and match eager."""
    z = torch.randn(4, 5)
    for layer in (LabelGraphRefinement(5), LabelGraphRefinement(5, h)):
        with torch.no_grad():
            layer.weight.normal_()
        compiled = torch.compile(layer, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(z), layer(z))


def test_state_dict_and_composition(h: Hierarchy) -> None:
    """pair_index is a buffer, and refine → AsymmetricLoss + HierarchyPenalty + regularization trains."""
    layer = LabelGraphRefinement(5, h)
    assert set(layer.state_dict()) == {"weight", "pair_index"}
    z = torch.randn(8, 5, requires_grad=True)
    refined = layer(z)
    loss = AsymmetricLoss()(refined, torch.randint(0, 2, (8, 5))) + HierarchyPenalty(h)(refined)
    (loss + layer.regularization()).backward()
    assert layer.weight.grad is not None and z.grad is not None


def test_errors(h: Hierarchy) -> None:
    """Bad arguments and shapes raise errors that name them."""
    with pytest.raises(ValueError, match="`num_labels` is 4 but the hierarchy has 5 labels"):
        LabelGraphRefinement(4, h)
    with pytest.raises(ValueError, match="`num_labels` must be a positive int, got 0"):
        LabelGraphRefinement(0)
    with pytest.raises(ValueError, match="`l1` must be a finite number >= 0, got -1"):
        LabelGraphRefinement(3, l1=-1)
    with pytest.raises(ValueError, match="`sparsity` must be one of 'edges', 'closure', got 'dense'"):
        LabelGraphRefinement(5, h, sparsity="dense")
    with pytest.raises(TypeError, match="Expected a Hierarchy or None, got dict"):
        LabelGraphRefinement(5, {"a": ["b"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 5\), got \(2, 3\)"):
        LabelGraphRefinement(5, h)(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"Expected a dense `weight` of shape \(3, 3\), got \(2, 2\)"):
        label_graph_refinement(torch.randn(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"Expected `weight` of shape \(6,\): one per coupling pair of the hierarchy, "
                                         r"got \(3,\)"):
        label_graph_refinement(torch.randn(2, 5), torch.zeros(3), h)
