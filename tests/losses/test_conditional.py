"""Tests for hierloss.losses.conditional: conditional (chain-rule) BCE and the chain rule's BCE on the marginals (the
fine-tuning stage), against naive loops, closed forms and PyTorch's BCE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hierloss import ChainRule, ChainRuleBCELoss, ConditionalBCELoss, Hierarchy
from hierloss.functional import chain_rule_bce_loss, conditional_bce_loss
from tests.layers.test_chain_rule import naive_marginals


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node ('d') and an isolated label."""
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "iso": []})


def naive(logits: torch.Tensor, target: torch.Tensor, h: Hierarchy, pos_weight: torch.Tensor | None = None,
          ignore_index: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element terms and the kept mask, with loops over samples and labels."""
    terms = torch.zeros_like(logits)
    kept = torch.zeros(logits.shape, dtype=torch.bool)
    for n in range(logits.shape[0]):
        for c, label in enumerate(h.labels):
            def known(v: torch.Tensor) -> bool:
                return not (bool(torch.isnan(v)) or (ignore_index is not None and float(v) == ignore_index))

            if not known(target[n, c]):
                continue
            parents = [h.index(p) for p in h.parents(label)]
            if not all(known(target[n, p]) and float(target[n, p]) > 0.5 for p in parents):
                continue
            pw = None if pos_weight is None else pos_weight[c:c + 1]
            terms[n, c] = F.binary_cross_entropy_with_logits(logits[n, c:c + 1], target[n, c:c + 1],
                                                             pos_weight=pw)
            kept[n, c] = True
    return terms, kept


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_a_naive_loop(dag: Hierarchy, reduction: str) -> None:
    """Values and gradients equal a loop that keeps a term only where every parent's target is 1, with NaN and
    ignore_index targets (left out, and so are their children's terms) and pos_weight."""
    torch.manual_seed(0)
    x = (torch.randn(9, dag.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(9, dag.num_labels) < 0.6).double()
    y[0, 0], y[1, 1], y[2, 3] = float("nan"), -1.0, 0.3
    pw = torch.rand(dag.num_labels, dtype=torch.float64) + 0.5
    got = ConditionalBCELoss(dag, reduction=reduction, pos_weight=pw, ignore_index=-1)(x, y)
    terms, kept = naive(x, y, dag, pw, -1)
    want = {"none": terms, "sum": terms.sum(), "mean": terms.sum() / kept.sum()}[reduction]
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want)
    assert not bool(kept[0, 1]) and not bool(kept[0, 2])  # the children of a NaN parent are left out


def test_without_edges_or_with_every_parent_positive_it_is_bce() -> None:
    """With no edges, or with every target 1, every term is kept: the loss is PyTorch's BCE."""
    torch.manual_seed(1)
    x = torch.randn(6, 3)
    y = (torch.rand(6, 3) < 0.5).float()
    flat = Hierarchy(["a", "b", "c"])
    torch.testing.assert_close(ConditionalBCELoss(flat)(x, y), F.binary_cross_entropy_with_logits(x, y))
    chain = Hierarchy.from_dict({"a": ["b"], "b": ["c"]})
    ones = torch.ones(6, 3)
    torch.testing.assert_close(ConditionalBCELoss(chain)(x, ones), F.binary_cross_entropy_with_logits(x, ones))


def test_module_equals_function_gradcheck_and_compile(dag: Hierarchy) -> None:
    """The module is the functional form with its buffers; float64 gradcheck; torch.compile(fullgraph=True)."""
    torch.manual_seed(2)
    x = torch.randn(5, dag.num_labels, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(5, dag.num_labels) < 0.6).double()
    crit = ConditionalBCELoss(dag)
    torch.testing.assert_close(crit(x, y), conditional_bce_loss(x, y, dag))
    assert torch.autograd.gradcheck(lambda z: ConditionalBCELoss(dag, reduction="none")(z, y), (x,))
    torch._dynamo.reset()
    compiled = torch.compile(ConditionalBCELoss(dag, validate_args=True), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x.float(), y.float()), crit(x.float(), y.float()))


def test_errors_name_the_offender(dag: Hierarchy) -> None:
    """Bad shapes, hierarchies, targets and pos_weight raise errors naming the offender."""
    with pytest.raises(TypeError, match="Expected a Hierarchy, got dict"):
        ConditionalBCELoss({"a": ["b"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 6\), got \(2, 5\)"):
        ConditionalBCELoss(dag)(torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"column 1 \('b'\) holds -1\.0 \(1 such value\); pass ignore_index=-1"):
        ConditionalBCELoss(dag)(torch.zeros(1, 6), torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"`pos_weight` must be finite and >= 0, but label 'c' is -2\.0"):
        ConditionalBCELoss(dag, pos_weight=torch.tensor([1.0, 1.0, -2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        ConditionalBCELoss(dag, reduction="avg")


# ---------------------------------------------------------------- ChainRuleBCELoss: the fine-tuning stage
def naive_marginal_bce(logits: torch.Tensor, target: torch.Tensor, h: Hierarchy,
                       pos_weight: torch.Tensor | None = None,
                       ignore_index: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element BCE of the naive loop's marginals (float64, the textbook formula) and the mask of known targets."""
    p = naive_marginals(logits, h)
    terms = torch.zeros_like(logits)
    known = torch.zeros(logits.shape, dtype=torch.bool)
    for n in range(logits.shape[0]):
        for c in range(h.num_labels):
            y = target[n, c]
            if bool(torch.isnan(y)) or (ignore_index is not None and float(y) == ignore_index):
                continue
            w = 1.0 if pos_weight is None else pos_weight[c]
            terms[n, c] = -(w * y * torch.log(p[n, c]) + (1 - y) * torch.log(1 - p[n, c]))
            known[n, c] = True
    return terms, known


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_chain_rule_bce_matches_a_naive_loop(dag: Hierarchy, reduction: str) -> None:
    """Values and gradients equal BCE of the naive chain-rule marginals, on a DAG with a multi-parent label, with NaN
    and ignore_index targets (only their own term left out), a soft target and pos_weight."""
    torch.manual_seed(3)
    x = (torch.randn(9, dag.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(9, dag.num_labels) < 0.6).double()
    y[0, 0], y[1, 1], y[2, 3] = float("nan"), -1.0, 0.3
    pw = torch.rand(dag.num_labels, dtype=torch.float64) + 0.5
    got = ChainRuleBCELoss(dag, reduction=reduction, pos_weight=pw, ignore_index=-1).double()(x, y)
    terms, known = naive_marginal_bce(x, y, dag, pw, -1)
    want = {"none": terms, "sum": terms.sum(), "mean": terms.sum() / known.sum()}[reduction]
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want)
    assert bool(known[0, 1])  # the child of a NaN parent keeps its term: its marginal's target is known
    assert float(g_got[:, dag.index("a")].abs().sum()) > 0  # descendants' terms reach the root's logit


def test_chain_rule_bce_without_edges_is_bce() -> None:
    """With no edges the marginals are the sigmoids: PyTorch's BCE with logits, pos_weight included, on extreme
    logits too."""
    torch.manual_seed(4)
    x = torch.randn(6, 3) * 40
    y = (torch.rand(6, 3) < 0.5).float()
    pw = torch.tensor([0.5, 2.0, 1.0])
    flat = Hierarchy(["a", "b", "c"])
    torch.testing.assert_close(ChainRuleBCELoss(flat, pos_weight=pw)(x, y),
                               F.binary_cross_entropy_with_logits(x, y, pos_weight=pw))


def test_chain_rule_bce_is_finite_where_marginals_round_to_0_or_1() -> None:
    """On a chain a → b with both logits at ±60 (marginals 1 or 0 in float32), the loss matches the closed forms
    −log(1 − σ(z)²) = −log(σ(−z)(1 + σ(z))) and −log σ(z)² = 2·softplus(−z), and the gradient is finite."""
    h = Hierarchy.from_edges([("a", "b")])
    for z, y in ((60.0, 0.0), (-60.0, 1.0)):
        x = torch.full((1, 2), z, requires_grad=True)
        got = chain_rule_bce_loss(x, torch.full((1, 2), y), h, reduction="none")
        zz = torch.tensor(z, dtype=torch.float64)
        if y == 0.0:
            want = [F.softplus(zz), -(F.logsigmoid(-zz) + torch.log1p(torch.sigmoid(zz)))]
        else:
            want = [F.softplus(-zz), 2 * F.softplus(-zz)]
        torch.testing.assert_close(got[0].double(), torch.stack(want), rtol=1e-6, atol=1e-5)
        got.sum().backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_chain_rule_bce_module_function_gradcheck_compile_and_state(dag: Hierarchy) -> None:
    """The module is the functional form with its buffers; it scores ChainRule's marginals; float64 gradcheck;
    torch.compile(fullgraph=True); a state dict of another hierarchy is refused."""
    torch.manual_seed(5)
    x = torch.randn(5, dag.num_labels, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(5, dag.num_labels) < 0.6).double()
    crit = ChainRuleBCELoss(dag)
    torch.testing.assert_close(crit(x, y), chain_rule_bce_loss(x, y, dag))
    torch.testing.assert_close(crit(x, y), F.binary_cross_entropy(ChainRule(dag).double()(x), y))
    assert torch.autograd.gradcheck(lambda z: ChainRuleBCELoss(dag, reduction="none")(z, y), (x,))
    torch._dynamo.reset()
    compiled = torch.compile(ChainRuleBCELoss(dag), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x.float(), y.float()), crit(x.float(), y.float()))
    other = Hierarchy.from_dict({"a": ["b"], "b": ["c", "d"], "c": ["e"], "iso": []})
    with pytest.raises(RuntimeError, match="saved for another hierarchy"):
        ChainRuleBCELoss(dag).load_state_dict(ChainRuleBCELoss(other).state_dict())


def test_chain_rule_bce_errors_name_the_offender(dag: Hierarchy) -> None:
    """Bad shapes, hierarchies, targets and pos_weight raise errors naming the offender."""
    with pytest.raises(TypeError, match="Expected a Hierarchy, got dict"):
        ChainRuleBCELoss({"a": ["b"]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a Hierarchy, got dict"):
        chain_rule_bce_loss(torch.zeros(1, 2), torch.zeros(1, 2), {"a": ["b"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 6\), got \(2, 5\)"):
        ChainRuleBCELoss(dag)(torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"column 1 \('b'\) holds -1\.0 \(1 such value\); pass ignore_index=-1"):
        ChainRuleBCELoss(dag)(torch.zeros(1, 6), torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"`pos_weight` must be finite and >= 0, but label 'c' is -2\.0"):
        ChainRuleBCELoss(dag, pos_weight=torch.tensor([1.0, 1.0, -2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        ChainRuleBCELoss(dag, reduction="avg")
