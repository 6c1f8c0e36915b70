"""Tests for hierloss.propagation, the engine: plans, the max over descendants, the min over ancestors and the chain
rule against naive per-label loops on random DAGs, the tie rule, written gradients, and every transform a user
applies (gradcheck, double backward, forward mode, vmap, torch.compile, FakeTensor, autocast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

from hierloss import Hierarchy
from hierloss.propagation import (
    LevelPlan,
    chain_rule_bce,
    chain_rule_log,
    chain_rule_marginals,
    closure_max,
    closure_min,
    constrained_logits,
    max_over_descendants,
    min_over_ancestors,
)
from tests.test_hierarchy import random_dags

DAG = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "f": []})


def _closure(h: Hierarchy, up: bool) -> list[list[int]]:
    """For each label, itself and its descendants (``up``) or ancestors, by a naive graph walk."""
    nxt: list[list[int]] = [[] for _ in range(h.num_labels)]
    for p, c in h.edge_indices:
        (nxt[p] if up else nxt[c]).append(c if up else p)
    out = []
    for start in range(h.num_labels):
        seen, stack = {start}, [start]
        while stack:
            for j in nxt[stack.pop()]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        out.append(sorted(seen))
    return out


def _naive_extremum(h: Hierarchy, x: np.ndarray, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Values and arg (the smallest index among the closure's elements holding the extremum), by loops."""
    closure = _closure(h, up=largest)
    out, arg = np.empty_like(x), np.empty(x.shape, dtype=np.int64)
    for n in range(x.shape[0]):
        for c in range(h.num_labels):
            vals = [x[n, d] for d in closure[c]]
            best = max(vals) if largest else min(vals)
            out[n, c] = best
            arg[n, c] = min(d for d in closure[c] if x[n, d] == best)
    return out, arg


def _naive_chain(h: Hierarchy, z: Tensor) -> tuple[Tensor, Tensor]:
    """``(log P, log(1 − P))`` by a loop over labels in depth order, in plain (autograd-traced) torch ops."""
    parents: list[list[int]] = [[] for _ in range(h.num_labels)]
    for p, c in h.edge_indices:
        parents[c].append(p)
    log_p: list[Tensor | None] = [None] * h.num_labels
    log_q: list[Tensor | None] = [None] * h.num_labels
    for c in sorted(range(h.num_labels), key=lambda i: h.depths[i]):
        b, a = F.logsigmoid(z[..., c]), F.logsigmoid(-z[..., c])
        if not parents[c]:
            log_p[c], log_q[c] = b, a
            continue
        cand = torch.stack([log_p[p] for p in sorted(parents[c])], -1)  # type: ignore[misc]
        low, which = cand.min(-1)  # ties: the first, i.e. the smallest index
        q_parent = torch.stack([log_q[p] for p in sorted(parents[c])], -1).gather(-1, which.unsqueeze(-1))[..., 0]  # type: ignore[misc]
        log_p[c] = b + low
        log_q[c] = torch.logaddexp(a, b + q_parent)
    return torch.stack(log_p, -1), torch.stack(log_q, -1)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(random_dags(), st.sampled_from(["descendants", "ancestors", "parents"]))
def test_plan_rows_and_levels(h: Hierarchy, kind: str) -> None:
    """Every label with a neighbour is written once, after all the labels it reads; its row is itself (but for
    'parents') then its neighbours in column order, padded by repeating the first entry."""
    plan = LevelPlan.build(h, kind)  # type: ignore[arg-type]
    neighbours: list[list[int]] = [[] for _ in range(h.num_labels)]
    for p, c in h.edge_indices:
        (neighbours[p] if kind == "descendants" else neighbours[c]).append(c if kind == "descendants" else p)
    written: dict[int, int] = {}
    n0 = p0 = 0
    for g, (k, width) in enumerate(plan.groups):
        nodes = plan.nodes[n0:n0 + k].tolist()
        rows = plan.neighbours[p0:p0 + k * width].view(k, width).tolist()
        n0, p0 = n0 + k, p0 + k * width
        for node, row in zip(nodes, rows):
            expected = ([] if kind == "parents" else [node]) + sorted(neighbours[node])
            assert row[:len(expected)] == expected
            assert row[len(expected):] == [expected[0]] * (width - len(expected))
            assert width <= max(2 * len(expected), len(expected) + 128)
            assert node not in written
            written[node] = g
    assert sorted(written) == [c for c in range(h.num_labels) if neighbours[c]]
    for node, g in written.items():  # everything a label reads is final before its group
        assert all(written.get(j, -1) < g for j in neighbours[node])
    assert (plan.nodes.numel(), plan.neighbours.numel()) == (n0, p0)


@settings(max_examples=60, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.booleans(), st.sampled_from([torch.float32, torch.float64]))
def test_extremum_values_and_tie_rule_match_loops(h: Hierarchy, seed: int, ties: bool, dtype: torch.dtype) -> None:
    """Max over descendants and min over ancestors equal the naive loops, and the gradient of each output goes to the
    smallest column index among the elements holding the extremum (scores drawn from {0, 1, 2} make many ties)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (4, h.num_labels)).astype(float) if ties else rng.random((4, h.num_labels))
    for largest, fn in ((True, max_over_descendants), (False, min_over_ancestors)):
        values, arg = _naive_extremum(h, x, largest)
        t = torch.tensor(x, dtype=dtype, requires_grad=True)
        out = fn(t, h)
        torch.testing.assert_close(out, torch.tensor(values, dtype=dtype), rtol=0, atol=0)
        weights = torch.rand(4, h.num_labels, dtype=dtype, generator=torch.Generator().manual_seed(seed % 1000))
        (grad,) = torch.autograd.grad((out * weights).sum(), t)
        expected = torch.zeros_like(weights).scatter_add_(1, torch.from_numpy(arg), weights)
        torch.testing.assert_close(grad, expected)
        torch.testing.assert_close(fn(t.detach(), h), out.detach(), rtol=0, atol=0)  # the no-grad walk agrees


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1))
def test_chain_rule_matches_loop(h: Hierarchy, seed: int) -> None:
    """log P and log(1 − P), their gradients and the marginals equal a per-label loop in float64."""
    z = torch.from_numpy(np.random.default_rng(seed).normal(0, 3, (3, h.num_labels))).requires_grad_()
    plan = LevelPlan.build(h, "parents")
    log_p, log_q = chain_rule_log(z, plan)
    ref_p, ref_q = _naive_chain(h, z)
    torch.testing.assert_close(log_p, ref_p)
    torch.testing.assert_close(log_q, ref_q)
    gp, gq = torch.rand_like(ref_p), torch.rand_like(ref_q)
    (grad,) = torch.autograd.grad((log_p * gp).sum() + (log_q * gq).sum(), z)
    (ref,) = torch.autograd.grad((ref_p * gp).sum() + (ref_q * gq).sum(), z)
    torch.testing.assert_close(grad, ref)
    torch.testing.assert_close(chain_rule_marginals(z, plan), ref_p.exp())
    no_grad_p, no_grad_q = chain_rule_log(z.detach(), plan)
    torch.testing.assert_close(no_grad_p, ref_p.detach())
    torch.testing.assert_close(no_grad_q, ref_q.detach())


def _distinct(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    n = math.prod(shape)
    return (torch.randperm(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / n).view(shape)


@settings(max_examples=40, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.booleans())
def test_constrained_logits_match_two_max_passes(h: Hierarchy, seed: int, ties: bool) -> None:
    """C-HMCNN's constrained logits equal where(y, MCM(where(y, z, −inf)), MCM(z)) computed with two plain passes, and
    their gradient goes, per element, to the element its selected max came from (the smallest index among ties)."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, (4, h.num_labels)).astype(float) if ties else rng.normal(size=(4, h.num_labels))
    y = rng.random((4, h.num_labels)) < 0.4
    on, on_arg = _naive_extremum(h, np.where(y, z, -np.inf), True)
    off, off_arg = _naive_extremum(h, z, True)
    t = torch.tensor(z, requires_grad=True)
    out = constrained_logits(t, torch.from_numpy(y), LevelPlan.build(h, "descendants"))
    torch.testing.assert_close(out, torch.from_numpy(np.where(y, on, off)), rtol=0, atol=0)
    weights = torch.rand(4, h.num_labels, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * weights).sum(), t)
    arg = torch.from_numpy(np.where(y, on_arg, off_arg))
    torch.testing.assert_close(grad, torch.zeros_like(weights).scatter_add_(1, arg, weights))
    no_grad = constrained_logits(t.detach(), torch.from_numpy(y), LevelPlan.build(h, "descendants"))
    torch.testing.assert_close(no_grad, out.detach(), rtol=0, atol=0)


def test_gradcheck_and_double_backward() -> None:
    """float64 gradcheck and gradgradcheck of all three operations (distinct values: no ties)."""
    x = _distinct((3, DAG.num_labels)).requires_grad_()
    up, down, par = (LevelPlan.build(DAG, k) for k in ("descendants", "ancestors", "parents"))  # type: ignore[arg-type]
    assert torch.autograd.gradcheck(lambda v: closure_max(v, up), (x,))
    assert torch.autograd.gradcheck(lambda v: closure_min(v, down), (x,))
    assert torch.autograd.gradcheck(lambda v: chain_rule_log(v * 6 - 3, par), (x,))
    assert torch.autograd.gradgradcheck(lambda v: closure_max(v, up) ** 2, (x,))
    assert torch.autograd.gradgradcheck(lambda v: closure_min(v, down) ** 2, (x,))
    assert torch.autograd.gradgradcheck(lambda v: [t ** 2 for t in chain_rule_log(v * 6 - 3, par)], (x,))
    positive = torch.rand(3, DAG.num_labels) < 0.5
    assert torch.autograd.gradcheck(lambda v: constrained_logits(v, positive, up), (x,))
    assert torch.autograd.gradgradcheck(lambda v: constrained_logits(v, positive, up) ** 2, (x,))


def test_forward_mode_matches_reverse_mode() -> None:
    """torch.func.jvp of every operation equals the Jacobian (from reverse mode) times the tangent."""
    x, t = _distinct((2, DAG.num_labels)), torch.randn(2, DAG.num_labels, dtype=torch.float64)
    up, down, par = (LevelPlan.build(DAG, k) for k in ("descendants", "ancestors", "parents"))  # type: ignore[arg-type]
    positive = torch.rand(2, DAG.num_labels) < 0.5
    fns = [lambda v: closure_max(v, up), lambda v: closure_min(v, down), lambda v: constrained_logits(v, positive, up),
           lambda v: torch.cat(chain_rule_log(v * 6 - 3, par), -1), lambda v: chain_rule_marginals(v, par)]
    for fn in fns:
        _, tangent = torch.func.jvp(fn, (x,), (t,))
        jac = torch.autograd.functional.jacobian(fn, x)
        torch.testing.assert_close(tangent, torch.einsum("ijkl,kl->ij", jac, t))


def test_per_sample_gradients_with_vmap() -> None:
    """vmap(grad(...)) gives each sample's gradient, equal to a loop of single-sample gradients."""
    x = torch.randn(5, DAG.num_labels, dtype=torch.float64)
    up, par = LevelPlan.build(DAG, "descendants"), LevelPlan.build(DAG, "parents")
    positive = torch.rand(DAG.num_labels) < 0.5
    for loss in (lambda v: closure_max(v, up).sigmoid().sum(), lambda v: chain_rule_log(v, par)[1].sum(),
                 lambda v: chain_rule_marginals(v, par).pow(2).sum(),
                 lambda v: constrained_logits(v.unsqueeze(0), positive.unsqueeze(0), up).sigmoid().sum()):
        batched = torch.func.vmap(torch.func.grad(loss))(x)
        looped = torch.stack([torch.func.grad(loss)(row) for row in x])
        torch.testing.assert_close(batched, looped)
        loop_autograd = torch.stack([torch.autograd.grad(loss(r := row.clone().requires_grad_()), r)[0] for row in x])
        torch.testing.assert_close(batched, loop_autograd)


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_compile_fullgraph(backend: str) -> None:
    """Every operation compiles with fullgraph=True, the chain rule's BCE included (which MCLoss's and
    ChainRuleBCELoss's own operators do not call); values, gradients (contiguous) and the values without a gradient
    equal eager."""
    up, down, par = (LevelPlan.build(DAG, k) for k in ("descendants", "ancestors", "parents"))  # type: ignore[arg-type]
    weights = torch.rand(4, 4, DAG.num_labels)
    y = (torch.rand(4, DAG.num_labels) < 0.4).float()
    pos_weight = torch.linspace(0.5, 2.0, DAG.num_labels)

    def f(v: Tensor) -> Tensor:
        log_p, log_q = chain_rule_log(v, par)
        return ((closure_max(v, up) * weights[0]).sum() + (closure_min(v, down) * weights[1]).sum() + log_p.sum()
                + log_q.sum() + (constrained_logits(v, v > 0, up) * weights[2]).sum()
                + (chain_rule_bce(v, y, par, pos_weight) * weights[3]).sum())

    def values(v: Tensor) -> tuple[Tensor, ...]:
        return closure_max(v, up), closure_min(v, down), chain_rule_marginals(v, par)

    torch._dynamo.reset()
    x = torch.randn(4, DAG.num_labels, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    torch.testing.assert_close(compiled(x), f(x))
    grad = torch.autograd.grad(compiled(x), x)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(f(x), x)[0])
    assert grad.is_contiguous()
    with torch.no_grad():
        for got, want in zip(torch.compile(values, fullgraph=True, backend=backend)(x), values(x), strict=True):
            torch.testing.assert_close(got, want)
            assert got.is_contiguous()


def test_max_and_min_operators_pass_opcheck() -> None:
    """torch.library.opcheck (schema, fake tensors, autograd registration, AOT dispatch) passes for the compiled
    max and min, which take their rows labels-major, ``(C, M)``."""
    import hierloss.propagation._compiled as compiled

    for kind, largest in (("descendants", True), ("ancestors", False)):
        plan = LevelPlan.build(DAG, kind)  # type: ignore[arg-type]
        groups = [k for k, _ in plan.groups], [w for _, w in plan.groups]
        xt = torch.randn(DAG.num_labels, 5, requires_grad=True)
        torch.library.opcheck(compiled.extremum, (xt, plan.nodes, plan.neighbours, *groups, largest))
        torch.library.opcheck(compiled.extremum_values, (xt.detach(), plan.nodes, plan.neighbours, *groups, largest))


def test_no_host_read_in_forward_or_backward() -> None:
    """Under FakeTensorMode any read of a value raises: forward and backward of every operation run there (so they
    never synchronise with a GPU)."""
    up, down, par = (LevelPlan.build(DAG, k) for k in ("descendants", "ancestors", "parents"))  # type: ignore[arg-type]
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.randn(4, DAG.num_labels, requires_grad=True)
        total = (closure_max(x, up).sum() + closure_min(x, down).sum() + chain_rule_log(x, par)[1].sum()
                 + constrained_logits(x, x > 0, up).sum())
        total.backward()
        with torch.no_grad():
            closure_max(x, up), chain_rule_marginals(x, par), constrained_logits(x, x > 0, up)


def test_autocast_and_low_precision() -> None:
    """Under CPU autocast and on bfloat16 inputs the results equal the float32 computation on the same values."""
    up, par = LevelPlan.build(DAG, "descendants"), LevelPlan.build(DAG, "parents")
    x = torch.randn(4, DAG.num_labels).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = closure_max(x, up)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), closure_max(x.float(), up), rtol=0, atol=0)
    torch.testing.assert_close(chain_rule_marginals(x, par).float(), chain_rule_marginals(x.float(), par), rtol=0.02,
                               atol=0.01)


def test_shapes_empty_and_depth() -> None:
    """(C,), (N, C) and (A, B, C) inputs; no edges or no labels is the identity; a 3,000-label chain is exact."""
    for shape in ((DAG.num_labels,), (3, DAG.num_labels), (2, 3, DAG.num_labels)):
        x = torch.rand(shape)
        flat = max_over_descendants(x.reshape(-1, DAG.num_labels), DAG)
        torch.testing.assert_close(max_over_descendants(x, DAG), flat.reshape(shape))
    flat_h = Hierarchy(["a", "b"])
    x = torch.rand(3, 2)
    assert torch.equal(max_over_descendants(x, flat_h), x) and torch.equal(min_over_ancestors(x, flat_h), x)
    empty = Hierarchy([])
    assert max_over_descendants(torch.rand(3, 0), empty).shape == (3, 0)
    assert chain_rule_marginals(torch.rand(3, 0), LevelPlan.build(empty, "parents")).shape == (3, 0)
    n = 3000
    chain = Hierarchy.from_edges([(f"n{i}", f"n{i + 1}") for i in range(n - 1)])
    order = [chain.index(f"n{i}") for i in range(n)]
    x = torch.randn(2, n, requires_grad=True)
    out = max_over_descendants(x, chain)
    along = x[:, order]
    expected = along.flip(-1).cummax(-1).values.flip(-1)  # max over the suffix of the path
    torch.testing.assert_close(out[:, order], expected)
    out.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) == pytest.approx(2 * n)


def test_inputs_are_never_written() -> None:
    """The walks write into copies: a single row, a (C,) vector and a batch are left as they were, with and without
    gradients."""
    up, down, par = (LevelPlan.build(DAG, k) for k in ("descendants", "ancestors", "parents"))  # type: ignore[arg-type]
    for shape in ((DAG.num_labels,), (1, DAG.num_labels), (4, DAG.num_labels)):
        for grad in (False, True):
            x = torch.randn(shape, requires_grad=grad)
            before = x.detach().clone()
            closure_max(x, up), closure_min(x, down), chain_rule_log(x, par)
            if x.ndim == 2:
                constrained_logits(x, x.detach() > 0, up)
            assert torch.equal(x.detach(), before)


def test_errors_name_the_offender() -> None:
    """A wrong label width names the expected and the given shape; an unknown plan kind is named."""
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(\.\.\., 6\), got \(4, 3\)"):
        max_over_descendants(torch.rand(4, 3), DAG)
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(\.\.\., 6\), got \(\)"):
        chain_rule_log(torch.tensor(1.0), LevelPlan.build(DAG, "parents"))
    with pytest.raises(ValueError, match="kind must be 'descendants', 'ancestors' or 'parents', got 'up'"):
        LevelPlan.build(DAG, "up")  # type: ignore[arg-type]
