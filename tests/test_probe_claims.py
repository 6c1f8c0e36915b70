"""Probe-suite tests of the docs' claims that two backends, code paths or layouts give the same numbers, each checked
as the page states it (its tolerance: "bit for bit", "to float32 rounding", "the same loss")."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch._dynamo.testing import CompileCounterWithBackend

import hierloss.functional as HF
from hierloss import HBCELoss, Hierarchy, HierarchyPenalty
from hierloss._penalty_forms import FORMS, MODES
from hierloss.edge_weights import count_edges
from hierloss.losses import _hbce_backend, hbce_backend
from hierloss.propagation import (
    LevelPlan,
    chain_rule_bce,
    chain_rule_log,
    closure_max,
    closure_min,
    constrained_logits,
)
from tests.losses.test_asymmetric import OriginalAsymmetricLoss
from tests.test_hierarchy import random_dags

#: Every way HBCE runs: (backend, layout) as forced with ``hbce_backend``; pair forms always gather.
KERNELS = [("reference", None), ("fused", "dense"), ("fused", "gather"), ("fused_cpu", "dense"),
           ("fused_cpu", "gather")]
DAG = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "iso": []})  # 6 labels, 5 edges
WEIGHTS = [0.5, 1.0, 2.0, 0.25, 1.5]
DIFFERENCE_MODES = tuple(m for m in MODES if FORMS[m].gap is not None)


@pytest.fixture(autouse=True)
def _no_forced_backend() -> Iterator[None]:
    """No test leaves an HBCE backend forced."""
    yield
    assert _hbce_backend._forced_backend is None and _hbce_backend._forced_layout is None


# ---------------------------------------------------------------------------------------------- propagation engine


def _engine_ops(h: Hierarchy, seed: int) -> tuple[Callable[[Tensor, Tensor], tuple[Tensor, ...]], int]:
    """Every operation of the engine on one hierarchy, as one function of the logits and a target in [0, 1]."""
    up, down, par = (LevelPlan.build(h, kind) for kind in ("descendants", "ancestors", "parents"))
    gen = torch.Generator().manual_seed(seed)
    positive = torch.rand(5, h.num_labels, generator=gen) < 0.4
    pos_weight = torch.rand(h.num_labels, generator=gen, dtype=torch.float64) + 0.5

    def ops(x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        log_p, log_q = chain_rule_log(x, par)
        return (closure_max(x, up), closure_min(x, down), constrained_logits(x, positive, up), log_p, log_q,
                chain_rule_bce(x, y, par, pos_weight))

    return ops, 6


def _outputs_and_grads(fn: Callable[[Tensor, Tensor], tuple[Tensor, ...]], x: Tensor, y: Tensor,
                       weights: list[Tensor]) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    """The outputs of ``fn`` and the gradients of ``Σ weights·outputs`` with respect to the logits and target."""
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    outs = fn(xr, yr)
    total = torch.stack([(o * w).sum() for o, w in zip(outs, weights)]).sum()
    grads = torch.autograd.grad(total, (xr, yr))
    return [o.detach() for o in outs], grads


@settings(max_examples=12, deadline=None)
@given(random_dags(), st.integers(0, 2**31 - 1), st.booleans())
def test_engine_routes_agree_bit_for_bit(h: Hierarchy, seed: int, ties: bool) -> None:
    """The eager Functions, the compiled custom operators (aot_eager, fullgraph) and the values-only walk (no_grad)
    give the same values bit for bit, and the first two the same gradients, on random DAGs (ties included)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(-2, 3, (5, h.num_labels)) if ties else rng.normal(0, 3, (5, h.num_labels))
    x = torch.tensor(raw, dtype=torch.float64)
    y = torch.from_numpy((rng.random((5, h.num_labels)) < 0.4).astype(np.float64))
    fn, count = _engine_ops(h, seed % 1000)
    weights = [torch.from_numpy(rng.random((5, h.num_labels))) for _ in range(count)]
    eager, eager_grads = _outputs_and_grads(fn, x, y, weights)
    torch._dynamo.reset()  # a new hierarchy is a new graph: stay below Dynamo's recompile limit
    counter = CompileCounterWithBackend("aot_eager")
    compiled, compiled_grads = _outputs_and_grads(torch.compile(fn, backend=counter, fullgraph=True), x, y, weights)
    assert counter.frame_count == 1
    if h.num_edges:  # the compiled route ran: the graph calls the engine's custom operators
        targets = {str(node.target) for graph in counter.graphs for node in graph.graph.nodes}
        assert any("hierloss" in t for t in targets), targets
    with torch.no_grad():
        values = [o.detach() for o in fn(x, y)]
    for name, got in (("compiled", compiled), ("no_grad", values)):
        for k, (a, b) in enumerate(zip(got, eager)):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"{name} output {k}")
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg="compiled gradient")


@pytest.mark.parametrize("seed", range(3))
def test_engine_export_route_equals_eager(seed: int) -> None:
    """Under torch.export the walks are traced as plain gathers and reductions; the exported program's values equal
    the eager Functions' bit for bit."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "e": ["g"], "f": [], "d": ["h"]})
    fn, _ = _engine_ops(h, seed)

    class Ops(torch.nn.Module):
        def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
            return fn(x, y)

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, h.num_labels, generator=gen, dtype=torch.float64) * 3
    y = (torch.rand(5, h.num_labels, generator=gen) < 0.4).double()
    exported = torch.export.export(Ops(), (x, y))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("hierloss" in t for t in targets), targets
    eager = fn(x.clone().requires_grad_(), y)  # the eager Functions (the input requires grad)
    for k, (a, b) in enumerate(zip(exported.module()(x, y), eager)):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0, msg=f"output {k}")


# ---------------------------------------------------------------------------------------------- HBCE backends


def _loss_and_grad(crit: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                   kernel: tuple[str, str | None]) -> tuple[Tensor, Tensor]:
    """The loss through one forced (backend, layout), and the gradient of its sum with respect to the logits."""
    leaf = x.clone().requires_grad_()
    with hbce_backend(*kernel):
        out = crit(leaf, y)
        (grad,) = torch.autograd.grad(out.sum(), leaf)
    return out.detach(), grad


def _batch(shape: tuple[int, int], seed: int, dtype: torch.dtype = torch.float32,
           nan: bool = False) -> tuple[Tensor, Tensor]:
    """Logits of spread 3 and 0/1 targets (a few NaN with ``nan``)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=gen) * 3).to(dtype)
    y = (torch.rand(*shape, generator=gen) < 0.3).to(dtype)
    if nan:
        y[0, 1], y[2, :] = math.nan, math.nan
    return x, y


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: "-".join(filter(None, k)))
def test_hbce_is_bce_plus_hierarchy_penalty(mode: str, reduction: str, kernel: tuple[str, str | None]) -> None:
    """hbce.md: HBCELoss is BCE + HierarchyPenalty with the same settings, value and gradient, on every backend and
    layout (with pos_weight, per-edge weights and each edge reduction), to float32 rounding."""
    x, y = _batch((24, DAG.num_labels), seed=3)
    pw = torch.linspace(0.5, 2.0, DAG.num_labels)
    bce_rows = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none").mean(1)
    for edge_reduction in ("sum", "mean"):
        settings_: dict[str, Any] = dict(edge_weight=WEIGHTS, scale=0.8, mode=mode, temperature=0.2,
                                         edge_reduction=edge_reduction)
        got, got_grad = _loss_and_grad(HBCELoss(DAG, reduction=reduction, pos_weight=pw, **settings_), x, y, kernel)
        penalty = HierarchyPenalty(DAG, reduction="none", **settings_)

        def composed(v: Tensor, t: Tensor, penalty: HierarchyPenalty = penalty) -> Tensor:
            rows = F.binary_cross_entropy_with_logits(v, t, pos_weight=pw, reduction="none").mean(1) + penalty(v)
            reduced: Tensor = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
            return reduced

        want, want_grad = _loss_and_grad(composed, x, y, ("reference", None))
        torch.testing.assert_close(got, want, msg=f"{kernel} {edge_reduction}")
        torch.testing.assert_close(got_grad, want_grad, msg=f"{kernel} {edge_reduction} gradient")
        if reduction == "mean":
            torch.testing.assert_close(bce_rows.mean(), F.binary_cross_entropy_with_logits(x, y, pos_weight=pw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("nan", [False, True])
def test_hard_penalty_adds_nothing_to_the_gradient(dtype: torch.dtype, reduction: str, nan: bool) -> None:
    """hbce.md: the hard penalty changes the value, never the training: on every backend its gradient is the BCE
    gradient of the same backend (scale=0) bit for bit, and BCE-with-logits' own to rounding."""
    x, y = _batch((48, DAG.num_labels), seed=5, dtype=dtype, nan=nan)
    valid = ~torch.isnan(y)
    leaf = x.clone().requires_grad_()
    rows = torch.stack([F.binary_cross_entropy_with_logits(leaf[n][valid[n]], y[n][valid[n]]) for n in range(48)])
    bce = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
    (bce_grad,) = torch.autograd.grad(bce.sum(), leaf)
    for kernel in KERNELS:
        hard, hard_grad = _loss_and_grad(HBCELoss(DAG, edge_weight=5.0, mode="hard", reduction=reduction), x, y,
                                         kernel)
        plain, plain_grad = _loss_and_grad(HBCELoss(DAG, scale=0.0, mode="hard", reduction=reduction), x, y, kernel)
        assert bool((hard > plain).any()), kernel  # the penalty is in the value...
        assert torch.equal(hard_grad, plain_grad), kernel  # ...and in no bit of the gradient
        torch.testing.assert_close(hard_grad, bce_grad, msg=str(kernel))


@pytest.mark.parametrize("mode", DIFFERENCE_MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_have_no_gradient_on_any_backend(mode: str, dtype: torch.dtype) -> None:
    """hbce-internals.md: f'(0) = 0, so a tie (parent and child equal) has no penalty gradient on any backend and
    layout, per-edge weights folded into the dense incidence included: the gradient is BCE's bit for bit."""
    gen = torch.Generator().manual_seed(7)
    row = torch.randn(32, 1, generator=gen, dtype=dtype) * 3
    x = row.expand(32, DAG.num_labels).clone()  # every label of a sample equal: every edge tied
    y = (torch.rand(32, DAG.num_labels, generator=gen) < 0.4).to(dtype)
    for kernel in KERNELS:
        for weights in (WEIGHTS, [0.3, 1.7, 2.9, 0.11, 1.3]):
            tied, tied_grad = _loss_and_grad(HBCELoss(DAG, edge_weight=weights, scale=0.9, mode=mode), x, y, kernel)
            plain, plain_grad = _loss_and_grad(HBCELoss(DAG, edge_weight=weights, scale=0.0, mode=mode), x, y, kernel)
            assert torch.equal(tied, plain) and torch.equal(tied_grad, plain_grad), (kernel, weights)


def _exact_bce(x: Tensor, y: Tensor) -> np.ndarray:
    """Per-element BCE in NumPy's extended precision, written without cancellation."""
    xs, ys = x.double().numpy().astype(np.longdouble), y.double().numpy().astype(np.longdouble)
    return np.asarray(np.maximum(xs, 0) - xs * ys + np.log1p(np.exp(-np.abs(xs))))


@pytest.mark.parametrize("kind", ["random", "confident"])
@pytest.mark.parametrize("rows", [16, 4096])
def test_no_edges_equals_bce_on_every_backend(kind: str, rows: int) -> None:
    """hbce.md: with no edges, 'mean' equals BCE with logits to float32 rounding on every backend (the reference
    included), confident batches too: as close to the extended-precision value as BCE's own."""
    gen = torch.Generator().manual_seed(11)
    y = (torch.rand(rows, 21, generator=gen) < 0.5).float()
    if kind == "confident":  # |logit| >= 12 on the side of the target: a loss below 1e-5 per element
        x = (torch.rand(rows, 21, generator=gen) * 10 + 12) * (y * 2 - 1)
    else:
        x = torch.randn(rows, 21, generator=gen) * 4
    flat = Hierarchy([f"l{i}" for i in range(21)])
    exact = float(_exact_bce(x, y).mean())
    allowed = abs(F.binary_cross_entropy_with_logits(x, y).item() - exact) + 8 * torch.finfo(torch.float32).eps * exact
    for kernel in KERNELS:
        with hbce_backend(*kernel):
            got = HBCELoss(flat)(x, y).item()
        assert abs(got - exact) <= allowed, (kernel, got, exact)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nan", [False, True])
def test_cpu_shortcuts_at_a_large_batch_equal_the_reference(mode: str, nan: bool) -> None:
    """hbce.md: the CPU shortcuts (Σ BCE with one logarithm per 32 elements from 40,000 elements on, matrix-vector row
    sums, an unmasked NaN-free target) give the same numbers as the generic kernel and the reference, with the
    penalty on, values and gradients to float32 rounding."""
    x, y = _batch((8192, DAG.num_labels), seed=13, nan=nan)
    assert x.numel() >= _hbce_backend._PRODUCT_MIN_ELEMENTS
    for reduction in ("mean", "sum"):
        crit = HBCELoss(DAG, edge_weight=WEIGHTS, scale=0.8, mode=mode, reduction=reduction)
        want, want_grad = _loss_and_grad(crit, x, y, ("reference", None))
        for kernel in KERNELS[1:]:
            got, got_grad = _loss_and_grad(crit, x, y, kernel)
            torch.testing.assert_close(got, want, msg=f"{kernel} {reduction}")
            torch.testing.assert_close(got_grad, want_grad, msg=f"{kernel} {reduction} gradient")


# ---------------------------------------------------------------------------------------------- element-wise losses

ELEMENTWISE: dict[str, Callable[..., Tensor]] = {
    "asymmetric": HF.asymmetric_loss,
    "focal": HF.focal_loss,
    "zlpr": HF.zlpr_loss,
    "multilabel_softmax": HF.multilabel_softmax_loss,
}


def _paths(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """``fn``'s value and gradient with respect to ``x`` on every path it runs: eager (the fused kernel), a target
    that requires grad, ``torch.compile`` (aot_eager, fullgraph) and ``torch.func.grad_and_value`` (the formula)."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for path in ("eager", "target_requires_grad", "compiled"):
        leaf, target = x.clone().requires_grad_(), y.clone().requires_grad_(path == "target_requires_grad")
        run = fn
        if path == "compiled":
            torch._dynamo.reset()
            run = torch.compile(fn, backend="aot_eager", fullgraph=True)
        value = run(leaf, target)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
        out[path] = (value.detach(), grad)
    def summed(v: Tensor) -> tuple[Tensor, Tensor]:
        value = fn(v, y)
        return value.sum(), value

    grad, (_, value) = torch.func.grad_and_value(summed, has_aux=True)(x)
    out["torch.func"] = (value, grad)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_asl_sum_is_the_authors_value_bit_for_bit_on_every_path(dtype: torch.dtype) -> None:
    """losses.md: reduction='sum' returns the authors' ASL value exactly, on the fused kernel and on every path that
    runs the formula instead (a target requiring grad, torch.compile, torch.func)."""
    gen = torch.Generator().manual_seed(17)
    x = (4 * torch.randn(32, 14, generator=gen)).to(dtype)
    y = torch.randint(0, 2, (32, 14), generator=gen).to(dtype)
    for gamma_neg, gamma_pos, clip, eps in [(4.0, 1.0, 0.05, 1e-8), (2.0, 2.0, 0.0, 1e-8), (0.0, 0.0, 0.1, 1e-5)]:
        authors = OriginalAsymmetricLoss(gamma_neg, gamma_pos, clip, eps)(x, y)
        fn = functools.partial(HF.asymmetric_loss, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps,
                               reduction="sum")
        for path, (value, _) in _paths(fn, x, y).items():
            assert torch.equal(value, authors), (path, gamma_neg, gamma_pos, clip, eps)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_gamma_zero_is_bce_bit_for_bit_on_every_path(reduction: str) -> None:
    """losses.md: with gamma=0, alpha=None the focal loss is F.binary_cross_entropy_with_logits: its value bit for
    bit on every path (under torch.func against BCE under torch.func, whose decomposition rounds apart), its gradient
    to rounding (compiled, 'mean' differs from BCE's by one unit in the last place)."""
    gen = torch.Generator().manual_seed(19)
    x, y = 4 * torch.randn(16, 9, generator=gen), torch.randint(0, 2, (16, 9), generator=gen).float()
    bce = _paths(lambda v, t: F.binary_cross_entropy_with_logits(v, t, reduction=reduction), x, y)
    focal = _paths(lambda v, t: HF.focal_loss(v, t, None, 0.0, reduction=reduction), x, y)
    for path, (value, grad) in focal.items():
        assert torch.equal(value, bce[path][0]), path
        torch.testing.assert_close(grad, bce[path][1], msg=path)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_elementwise_fused_kernel_equals_the_formula_in_float32(name: str, reduction: str) -> None:
    """losses.md: in float32, with masked (NaN and ignore_index) targets, the fused kernel's values are the formula's
    (on the paths that run it) to float32 rounding, and its gradients autograd's on the formula to rounding."""
    gen = torch.Generator().manual_seed(23)
    x = 3 * torch.randn(40, 17, generator=gen)
    y = torch.randint(0, 2, (40, 17), generator=gen).float()
    y[:, 0], y[:, 1] = 1.0, 0.0
    y[3, 4], y[5, 6] = math.nan, -1.0
    fn = lambda v, t: ELEMENTWISE[name](v, t, reduction=reduction, ignore_index=-1)  # noqa: E731
    paths = _paths(fn, x, y)
    value, grad = paths.pop("eager")
    for path, (other, other_grad) in paths.items():
        torch.testing.assert_close(value, other, msg=path)
        torch.testing.assert_close(grad, other_grad, msg=f"{path} gradient")


# ---------------------------------------------------------------------------------------------- edge counts


@pytest.mark.parametrize("uncertain", ["zeros", "ones", "ignore"])
def test_chunked_streamed_and_sparse_counts_equal_one_matrix(uncertain: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """edge-weights.md: chunked, streamed (a CSV read with chunksize=), sparse and DataFrame inputs give exactly the
    same three counts as one matrix, uncertain (-1) and missing (NaN) entries included, across counting blocks."""
    from hierloss import edge_weights as edge_weights_module

    monkeypatch.setattr(edge_weights_module, "_CHUNK_ROWS", 32)
    rng = np.random.default_rng(29)
    y = rng.choice([0.0, 1.0, -1.0, math.nan], p=[0.5, 0.3, 0.1, 0.1], size=(301, DAG.num_labels))
    whole = count_edges(DAG, y, uncertain=uncertain)  # type: ignore[arg-type]
    frame = pd.DataFrame(y, columns=list(DAG.labels))
    path = tmp_path / "labels.csv"
    frame.assign(id=range(len(frame)))[["id", *reversed(DAG.labels)]].to_csv(path, index=False)
    without_nan = np.nan_to_num(y, nan=-1.0)
    inputs = {
        "chunks": [y[:10], torch.from_numpy(y[10:200]), frame.iloc[200:]],
        "generator": (chunk for chunk in np.array_split(y, 9)),
        "csv chunksize": pd.read_csv(path, chunksize=40),
        "frame": frame[list(reversed(DAG.labels))],
        "float32 tensor": torch.from_numpy(y).float(),
    }
    for name, labels in inputs.items():
        got = count_edges(DAG, labels, uncertain=uncertain)  # type: ignore[arg-type]
        for field in ("n", "n_parent_neg", "n_violation"):
            assert torch.equal(getattr(got, field), getattr(whole, field)), (name, field)
    sparse = count_edges(DAG, scipy.sparse.csr_matrix(without_nan), uncertain=uncertain)  # type: ignore[arg-type]
    dense = count_edges(DAG, without_nan, uncertain=uncertain)  # type: ignore[arg-type]
    for field in ("n", "n_parent_neg", "n_violation"):
        assert torch.equal(getattr(sparse, field), getattr(dense, field)), ("sparse", field)
