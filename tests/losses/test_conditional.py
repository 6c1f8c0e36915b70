"""Tests for hierloss.losses.conditional: conditional (chain-rule) BCE against a naive loop and PyTorch's BCE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hierloss import ConditionalBCELoss, Hierarchy
from hierloss.functional import conditional_bce_loss


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
