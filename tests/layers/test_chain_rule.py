"""Tests for hierloss.layers.chain_rule: marginals from conditional logits against a naive loop; coherence on
random DAGs; the product along the path on trees."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import ChainRule, Hierarchy
from hierloss.functional import chain_rule_probs
from tests.test_hierarchy import random_dags


def naive_marginals(logits: torch.Tensor, h: Hierarchy) -> torch.Tensor:
    """P(c) = σ(z_c) · min over parents of P(p), label by label in topological order."""
    cond = torch.sigmoid(logits)
    out = torch.empty_like(cond)
    for label in h.topological_order:
        c = h.index(label)
        parents = [h.index(p) for p in h.parents(label)]
        if not parents:
            out[..., c] = cond[..., c]
        else:
            out[..., c] = cond[..., c] * torch.stack([out[..., p] for p in parents], -1).amin(-1)
    return out


@settings(max_examples=40, deadline=None)
@given(h=random_dags(), seed=st.integers(0, 1000))
def test_equals_a_naive_loop_and_is_coherent_on_random_dags(h: Hierarchy, seed: int) -> None:
    """On random DAGs the marginals equal the naive loop, and every child is at or below each of its parents."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, h.num_labels, generator=g, dtype=torch.float64) * 3
    got = chain_rule_probs(logits, h)
    torch.testing.assert_close(got, naive_marginals(logits, h))
    torch.testing.assert_close(ChainRule(h).double()(logits), got)
    parents, children = h.edge_index
    assert bool((got[:, children] <= got[:, parents]).all())


def test_tree_is_the_product_along_the_path() -> None:
    """On a tree the marginal of a label is the product of the conditionals along its path from the root."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    z = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    s = torch.sigmoid(z)[0]
    want = torch.tensor([[s[0], s[0] * s[1], s[0] * s[2], s[0] * s[1] * s[3]]])
    torch.testing.assert_close(chain_rule_probs(z, h), want)


def test_batch_dims_gradcheck_compile_and_errors() -> None:
    """Any leading dimensions; float64 gradcheck; torch.compile(fullgraph=True); a wrong width is named."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"]})
    z = torch.randn(2, 3, h.num_labels, dtype=torch.float64, requires_grad=True)
    out = ChainRule(h).double()(z)
    assert out.shape == z.shape
    torch.testing.assert_close(out[1], chain_rule_probs(z[1], h))
    assert torch.autograd.gradcheck(lambda x: chain_rule_probs(x, h), (z,))
    torch._dynamo.reset()
    compiled = torch.compile(ChainRule(h), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(z.float()), chain_rule_probs(z.float(), h))
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(\.\.\., 4\), got \(2, 3\)"):
        ChainRule(h)(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="Expected a Hierarchy, got str"):
        chain_rule_probs(z, "h")  # type: ignore[arg-type]
