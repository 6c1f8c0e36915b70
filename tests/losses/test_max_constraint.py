"""Tests for hierloss.losses.max_constraint: C-HMCNN's MCM and MCLoss against the authors' dense formulation."""

from __future__ import annotations

import io
import pickle
import random

import pytest
import torch
import torch.nn.functional as F

from hierloss import AsymmetricLoss, Hierarchy, HierarchyPenalty, MaxConstraint, MCLoss
from hierloss.functional import max_over_descendants, mc_loss


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node, a two-level chain and an isolated label."""
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "e": ["f"], "iso": []})


def random_dag(num_labels: int, extra_edges: int, seed: int) -> Hierarchy:
    """A random DAG: a random tree (each label's parent has a smaller index) plus extra forward edges."""
    rng = random.Random(seed)
    labels = [f"l{i}" for i in range(num_labels)]
    edges = {(rng.randrange(i), i) for i in range(1, num_labels)}
    while len(edges) < num_labels - 1 + extra_edges:
        child = rng.randrange(2, num_labels)
        edges.add((rng.randrange(child), child))
    return Hierarchy(labels, [(labels[p], labels[c]) for p, c in edges])


def descendant_matrix(h: Hierarchy) -> torch.Tensor:
    """The authors' R: ``R[i, j] = 1`` when ``j`` is ``i`` or a descendant of ``i`` (float64)."""
    anc = h.ancestor_matrix().to(torch.float64)  # anc[i, j]: j is a proper ancestor of i
    return anc.t() + torch.eye(h.num_labels, dtype=torch.float64)


def get_constr_out(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The authors' MCM, verbatim in spirit: a dense (N, C, C) product and a max over the last axis."""
    c_out = x.double().unsqueeze(1).expand(len(x), R.shape[1], R.shape[1])
    R_batch = R.expand(len(x), R.shape[1], R.shape[1])
    final_out, _ = torch.max(R_batch * c_out, dim=2)
    return final_out


def chmcnn_reference(logits: torch.Tensor, y: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The authors' training loss: MCM on sigmoid outputs, y-masked MCM for positives, nn.BCELoss (mean)."""
    output = torch.sigmoid(logits.double())
    constr_output = get_constr_out(output, R)
    train_output = get_constr_out(y * output, R)
    train_output = (1 - y) * constr_output + y * train_output
    return F.binary_cross_entropy(train_output, y)


def consistent_targets(h: Hierarchy, n: int, p: float, seed: int) -> torch.Tensor:
    """Random 0/1 targets closed under the true-path rule (as C-HMCNN assumes), float64."""
    g = torch.Generator().manual_seed(seed)
    raw = (torch.rand(n, h.num_labels, generator=g) < p).to(torch.float64)
    return h.propagate(raw)


def test_mcloss_matches_dense_reference(dag: Hierarchy) -> None:
    """MCLoss equals the authors' dense (N, C, C) C-HMCNN loss in float64 on random logits, and so do gradients."""
    torch.manual_seed(0)
    R = descendant_matrix(dag)
    y = consistent_targets(dag, 64, 0.3, seed=1)
    logits = (3 * torch.randn(64, dag.num_labels, dtype=torch.float64)).requires_grad_()
    ours = MCLoss(dag)(logits, y)
    ref = chmcnn_reference(logits, y, R)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours, = torch.autograd.grad(ours, logits)
    g_ref, = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_mcloss_matches_dense_reference_random_dags() -> None:
    """On several random DAGs (multi-parent nodes), MCLoss equals the dense reference."""
    for seed in range(4):
        h = random_dag(40, 15, seed)
        y = consistent_targets(h, 16, 0.1, seed)
        logits = 2 * torch.randn(16, h.num_labels, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(mc_loss(logits, y, h), chmcnn_reference(logits, y, descendant_matrix(h)),
                                   rtol=1e-12, atol=1e-12)


def test_max_constraint_matches_dense_mcm(dag: Hierarchy) -> None:
    """MaxConstraint equals the dense MCM and max_over_descendants, and its output is coherent."""
    probs = torch.rand(32, dag.num_labels, dtype=torch.float64)
    out = MaxConstraint(dag)(probs)
    torch.testing.assert_close(out, get_constr_out(probs, descendant_matrix(dag)), rtol=0, atol=0)
    torch.testing.assert_close(out, max_over_descendants(probs, dag), rtol=0, atol=0)
    for p, c in dag.edge_indices:
        assert bool((out[:, p] >= out[:, c]).all())


def test_max_constraint_commutes_with_sigmoid(dag: Hierarchy) -> None:
    """MCM(σ(z)) = σ(MCM(z)): constraining logits or probabilities gives the same prediction."""
    z = 4 * torch.randn(16, dag.num_labels, dtype=torch.float64)
    constrain = MaxConstraint(dag)
    torch.testing.assert_close(constrain(torch.sigmoid(z)), torch.sigmoid(constrain(z)), rtol=0, atol=0)


def test_mcloss_never_masks_logits_with_zero() -> None:
    """A negative child under a positive parent does not lift the parent's constrained logit to 0.

    Masking raw logits with 0 (instead of probabilities, or logits with −∞) would make the positive parent's
    constrained logit max(z_parent, 0) = 0 here, giving loss log 2 for it instead of softplus(5).
    """
    h = Hierarchy.from_edges([("p", "c")])
    logits = torch.tensor([[-5.0, -8.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    per_element = mc_loss(logits, y, h, reduction="none")
    expected = F.softplus(torch.tensor([[5.0, -8.0]], dtype=torch.float64))  # BCE(−5, 1), BCE(−8, 0)
    torch.testing.assert_close(per_element, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(per_element.mean(), chmcnn_reference(logits, y, descendant_matrix(h)))


def test_mcloss_reductions_and_no_hierarchy_equals_bce() -> None:
    """Without edges MCLoss is BCE-with-logits for every reduction."""
    h = Hierarchy(["a", "b", "c"])
    logits = torch.randn(10, 3)
    y = torch.randint(0, 2, (10, 3)).float()
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(MCLoss(h, reduction=reduction)(logits, y),
                                   F.binary_cross_entropy_with_logits(logits, y, reduction=reduction))


def test_mcloss_ignore_index_and_nan(dag: Hierarchy) -> None:
    """Ignored and NaN targets drop out of the mean; the rest equals the per-element loss with them counted negative."""
    torch.manual_seed(1)
    logits = torch.randn(8, dag.num_labels, dtype=torch.float64)
    y = consistent_targets(dag, 8, 0.3, seed=2)
    mask = torch.rand(8, dag.num_labels) < 0.3
    with_ignore = torch.where(mask, torch.full_like(y, -1.0), y)
    with_nan = torch.where(mask, torch.full_like(y, float("nan")), y)
    per_element = mc_loss(logits, torch.where(mask, 0.0, y), dag, reduction="none")
    expected = per_element[~mask].mean()
    torch.testing.assert_close(mc_loss(logits, with_ignore, dag, ignore_index=-1), expected)
    torch.testing.assert_close(mc_loss(logits, with_nan, dag), expected)
    assert bool((mc_loss(logits, with_nan, dag, reduction="none")[mask] == 0).all())


def test_mcloss_extreme_logits_finite(dag: Hierarchy) -> None:
    """±100 logits give a finite loss and gradient (the logit-space BCE never takes log 0)."""
    logits = (100 * torch.sign(torch.randn(16, dag.num_labels))).requires_grad_()
    y = consistent_targets(dag, 16, 0.4, seed=3).float()
    loss = MCLoss(dag)(logits, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_mcloss_fp16_inputs(dag: Hierarchy) -> None:
    """Half-precision logits are computed in float32 and match the float64 result to fp16 input rounding."""
    logits = torch.randn(32, dag.num_labels).half()
    y = consistent_targets(dag, 32, 0.3, seed=4)
    out = MCLoss(dag)(logits, y.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), mc_loss(logits.double(), y, dag), rtol=1e-6, atol=1e-6)


def test_mcloss_gradcheck(dag: Hierarchy) -> None:
    """float64 gradcheck of MCLoss (no ties among random logits)."""
    logits = torch.randn(6, dag.num_labels, dtype=torch.float64, requires_grad=True)
    y = consistent_targets(dag, 6, 0.4, seed=5)
    assert torch.autograd.gradcheck(lambda x: mc_loss(x, y, dag, reduction="sum"), (logits,))


def test_mcloss_go_size_runs_without_dense_tensor() -> None:
    """~4,100 labels / ~5,800 edges at batch 256 runs, and two rows match the dense reference computed row by row."""
    h = random_dag(4100, 1700, seed=7)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(256, h.num_labels, generator=g, requires_grad=True)
    y = consistent_targets(h, 256, 0.002, seed=8).float()
    per_element = MCLoss(h, reduction="none")(logits, y)
    per_element.mean().backward()
    assert per_element.shape == (256, 4100)
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    R = descendant_matrix(h)
    for row in (0, 255):
        x, t = logits[row:row + 1].detach().double(), y[row:row + 1].double()
        out = torch.sigmoid(x)
        train = (1 - t) * get_constr_out(out, R) + t * get_constr_out(t * out, R)
        ref = F.binary_cross_entropy(train, t, reduction="none")
        torch.testing.assert_close(per_element[row:row + 1].detach().double(), ref, rtol=1e-5, atol=1e-6)


def test_compile_fullgraph(dag: Hierarchy) -> None:
    """MCLoss and MaxConstraint compile with fullgraph=True and match eager."""
    criterion, constrain = MCLoss(dag), MaxConstraint(dag)
    logits = torch.randn(8, dag.num_labels)
    y = consistent_targets(dag, 8, 0.3, seed=6).float()
    compiled = torch.compile(criterion, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(logits, y), criterion(logits, y))
    compiled_mcm = torch.compile(constrain, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled_mcm(torch.sigmoid(logits)), constrain(torch.sigmoid(logits)))


def test_buffers_state_dict_and_pickle(dag: Hierarchy) -> None:
    """The plan is stored as buffers (state_dict round trip) and the modules pickle."""
    criterion = MCLoss(dag)
    assert set(criterion.state_dict()) == {"edge_index"}
    buffer = io.BytesIO()
    torch.save(criterion.state_dict(), buffer)
    buffer.seek(0)
    fresh = MCLoss(dag)
    fresh.load_state_dict(torch.load(buffer))
    logits, y = torch.randn(4, dag.num_labels), consistent_targets(dag, 4, 0.3, seed=9).float()
    torch.testing.assert_close(pickle.loads(pickle.dumps(criterion))(logits, y), criterion(logits, y))
    assert isinstance(pickle.loads(pickle.dumps(MaxConstraint(dag))), MaxConstraint)


def test_composes_with_hierarchy_penalty(dag: Hierarchy) -> None:
    """MCLoss plus HierarchyPenalty (and ASL plus the penalty) is a scalar whose backward works."""
    logits = torch.randn(8, dag.num_labels, requires_grad=True)
    y = consistent_targets(dag, 8, 0.3, seed=10).float()
    loss = MCLoss(dag)(logits, y) + HierarchyPenalty(dag, 1.0)(logits) + AsymmetricLoss()(logits, y)
    loss.backward()
    assert loss.ndim == 0 and logits.grad is not None


def test_errors(dag: Hierarchy) -> None:
    """Bad shapes, hierarchies, plans and reductions raise errors naming the offender."""
    logits = torch.randn(4, dag.num_labels)
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(\.\.\., 7\), got \(4, 3\)"):
        MCLoss(dag)(torch.randn(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(4, 7\) like `input`, got \(4, 6\)"):
        MCLoss(dag)(logits, torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, C\), got \(7,\)"):
        mc_loss(torch.randn(7), torch.zeros(7), dag)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        MCLoss(dag, reduction="avg")
    with pytest.raises(TypeError, match="Expected a Hierarchy, got dict"):
        MaxConstraint({"a": ["b"]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a Hierarchy, got str"):
        mc_loss(logits, torch.zeros_like(logits), "dag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(\.\.\., 7\), got \(4, 2\)"):
        MaxConstraint(dag)(torch.rand(4, 2))


def test_state_dict_of_another_hierarchy_is_refused() -> None:
    """MCLoss / MaxConstraint refuse a state dict saved over another hierarchy, naming the first differing edge, and
    keep their own plan (the one of ``self.hierarchy``)."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    other = Hierarchy.from_dict({"a": ["b", "c"], "c": ["d"]})
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.9]])
    for cls in (MCLoss, MaxConstraint):
        module = cls(h)
        with pytest.raises(RuntimeError, match=rf"edge_index: the state dict was saved for another hierarchy \(its "
                                               rf"edge 2 joins label indices \(2, 3\); this hierarchy's edge 2 is "
                                               rf"\('b', 'd'\) = \(1, 3\)\); build the {cls.__name__} from"):
            module.load_state_dict(cls(other).state_dict())
        for name, value in cls(h).state_dict().items():
            assert torch.equal(module.state_dict()[name], value)
    torch.testing.assert_close(MaxConstraint(h)(scores), torch.tensor([[0.9, 0.9, 0.3, 0.9]]))
