"""Tests for hierloss.losses._hbce_backend: every backend and edge layout agrees with the plain-PyTorch reference,
the dispatch rule, the CPU shortcuts, double backward, torch.compile, and no host reads on the accelerator path."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from hierloss import HBCELoss, Hierarchy
from hierloss._masking import target_mask
from hierloss._penalty_forms import FORMS, MODES
from hierloss.datasets import chexpert_hierarchy
from hierloss.functional import hbce_loss
from hierloss.losses import _hbce_backend, hbce_backend

WEIGHTS = [0.5, 1.0, 2.0, 0.25, 1.5]

TRAINABLE = tuple(m for m in MODES if FORMS[m].has_gradient)
#: Every (backend, layout) but the reference, which the others are compared with.
FAST = [("fused", "dense"), ("fused", "gather"), ("fused_cpu", "dense"), ("fused_cpu", "gather")]


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node and an isolated label."""
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "iso": []})


def wide_tree(width: int = 150) -> Hierarchy:
    """A two-level tree over 1 + width labels: rows of >= 128 labels (the CPU row sums take ``sum(1)``) and
    ``E·C`` above ``DENSE_MAX_ENTRIES`` (the automatic layout gathers)."""
    return Hierarchy.from_dict({"root": [f"c{i}" for i in range(width)]})


def loss_and_grad(crit: HBCELoss, x: torch.Tensor, y: torch.Tensor, backend: str | None,
                  layout: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    with hbce_backend(backend, layout):
        out = crit(x, y)
        upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
        (grad,) = torch.autograd.grad(out, x, upstream)
    return out.detach(), grad


def make_target(shape: tuple[int, int], kind: str, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    y = (torch.rand(*shape) < 0.4).double()
    if kind == "nan":
        y[0, 1], y[2, :] = float("nan"), float("nan")
    elif kind == "ignore":
        y[1, 0], y[3, 2] = -1.0, -1.0
    elif kind == "soft":
        y[0, 0], y[1, 1] = 0.3, 0.8
    return y


# ---------------------------------------------------------------- agreement
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["clean", "nan", "ignore", "soft"])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_every_backend_and_layout_equals_the_reference(dag: Hierarchy, mode: str, reduction: str, target_kind: str,
                                                       with_pos_weight: bool) -> None:
    """Value and gradient (for a non-uniform upstream gradient) of every fused backend and layout equal the
    plain-PyTorch reference, for every mode, reduction, NaN mask, ignore_index and pos_weight."""
    torch.manual_seed(1)
    x = (torch.randn(9, dag.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = make_target((9, dag.num_labels), target_kind, 2)
    pw = torch.rand(dag.num_labels, dtype=torch.float64) + 0.5 if with_pos_weight else None
    crit = HBCELoss(dag, edge_weight=[0.5, 1.0, 2.0, 0.25, 1.5], scale=0.8, mode=mode, temperature=0.2,
                    reduction=reduction, pos_weight=pw, ignore_index=-1 if target_kind == "ignore" else None)
    want, want_grad = loss_and_grad(crit, x, y, "reference", None)
    for backend, layout in FAST:
        got, got_grad = loss_and_grad(crit, x, y, backend, layout)
        torch.testing.assert_close(got, want, msg=f"{backend}/{layout}")
        torch.testing.assert_close(got_grad, want_grad, msg=f"{backend}/{layout} gradient")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target_kind", ["clean", "nan"])
def test_wide_rows_and_default_gather_layout_agree(mode: str, target_kind: str) -> None:
    """On a hierarchy with rows of >= 128 labels (the CPU shortcut sums rows with ``sum(1)`` there) and too many
    edges for the default dense layout, every backend and layout equals the reference, in float32."""
    h = wide_tree()
    assert h.num_edges * h.num_labels > _hbce_backend.DENSE_MAX_ENTRIES
    torch.manual_seed(3)
    x = (torch.randn(6, h.num_labels) * 2).requires_grad_()
    y = make_target((6, h.num_labels), target_kind, 4).float()
    for reduction in ("mean", "none"):
        crit = HBCELoss(h, mode=mode, reduction=reduction)
        want, want_grad = loss_and_grad(crit, x, y, "reference", None)
        for backend, layout in [*FAST, (None, None)]:
            got, got_grad = loss_and_grad(crit, x, y, backend, layout)
            torch.testing.assert_close(got, want)
            torch.testing.assert_close(got_grad, want_grad)


def test_functional_form_runs_every_backend_without_a_plan(dag: Hierarchy) -> None:
    """``hbce_loss`` (no buffered plan: the layouts build theirs per call) equals the module on every backend."""
    torch.manual_seed(5)
    x, y = torch.randn(5, 6), (torch.rand(5, 6) < 0.5).float()
    crit = HBCELoss(dag, edge_weight=[1, 2, 3, 4, 5])
    for backend, layout in [("reference", None), *FAST]:
        with hbce_backend(backend, layout):
            torch.testing.assert_close(hbce_loss(x, y, dag, [1.0, 2, 3, 4, 5]), crit(x, y))


@pytest.mark.parametrize("backend", ["fused", "fused_cpu"])
def test_no_edges_and_empty_batch(backend: str) -> None:
    """A hierarchy without edges gives plain BCE, and an empty batch BCE's NaN mean, on the fused backends."""
    h = Hierarchy(["a", "b", "c"])
    x, y = torch.randn(4, 3, requires_grad=True), (torch.rand(4, 3) < 0.5).float()
    with hbce_backend(backend):
        torch.testing.assert_close(HBCELoss(h)(x, y), F.binary_cross_entropy_with_logits(x, y))
        empty = HBCELoss(chexpert_hierarchy())(torch.zeros(0, 21, requires_grad=True), torch.zeros(0, 21))
    assert torch.isnan(empty)


@pytest.mark.parametrize("mode", ["logit_hinge", "hinge", "squared_hinge"])
@pytest.mark.parametrize("target_kind", ["clean", "nan"])
def test_gather_backward_in_blocks_equals_the_reference(mode: str, target_kind: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The gather layout's backward over blocks of samples (taken from N·E = 2**20 entries on: bounded temporaries at
    GO size) equals the reference, here forced on a small batch, blocks of unequal size included."""
    monkeypatch.setattr(_hbce_backend, "_BLOCK_MIN_ENTRIES", 0)
    assert _hbce_backend._blocks(10, 5) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert _hbce_backend._blocks(3, 5) == [(0, 1), (1, 2), (2, 3)]
    h = wide_tree(40)
    torch.manual_seed(12)
    x = (torch.randn(11, h.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = make_target((11, h.num_labels), target_kind, 13)
    for reduction in ("mean", "none"):
        crit = HBCELoss(h, edge_weight=torch.rand(h.num_edges) + 0.5, mode=mode, reduction=reduction)
        want, want_grad = loss_and_grad(crit, x, y, "reference", None)
        for backend in ("fused", "fused_cpu"):
            got, got_grad = loss_and_grad(crit, x, y, backend, "gather")
            torch.testing.assert_close(got, want)
            torch.testing.assert_close(got_grad, want_grad)


def test_weighted_incidence_follows_the_edge_weights(dag: Hierarchy) -> None:
    """The dense layout keeps the incidence with the weights folded in between calls, and rebuilds it when the edge
    weights change in place (load_state_dict), are replaced, or the module changes dtype."""
    x, y = torch.randn(6, 6, dtype=torch.float64), (torch.rand(6, 6) < 0.5).double()
    crit = HBCELoss(dag, mode="squared_hinge", edge_weight=[1.0] * 5)
    crit(x.float(), y.float())
    assert crit._plan.cache and crit._plan.cache["weight"] is crit.edge_weight
    first = crit._plan.cache["value"]
    crit(x.float(), y.float())
    assert crit._plan.cache["value"] is first  # reused
    for change in ("load", "assign", "double"):
        if change == "load":
            crit.load_state_dict({**crit.state_dict(), "edge_weight": torch.tensor(WEIGHTS)})
        elif change == "assign":
            crit.edge_weight = torch.tensor(WEIGHTS[::-1])
        else:
            crit = crit.double()
        expected = HBCELoss(dag, mode="squared_hinge", edge_weight=crit.edge_weight.tolist()).double()
        with hbce_backend("fused_cpu", "dense"):
            got = crit(x, y) if change == "double" else crit(x.float(), y.float()).double()
        torch.testing.assert_close(got, expected(x, y), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- gradients of every order
@pytest.mark.parametrize("mode", TRAINABLE)
@pytest.mark.parametrize(("backend", "layout"), [("reference", None), *FAST])
def test_double_backward_matches_finite_differences(dag: Hierarchy, mode: str, backend: str,
                                                    layout: str | None) -> None:
    """``create_graph=True`` works on every backend: gradgradcheck compares the gradient's own derivatives with
    finite differences of the gradient (float64; a NaN target and pos_weight on)."""
    torch.manual_seed(6)
    x = (torch.randn(4, dag.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(4, dag.num_labels) < 0.5).double()
    y[1, 2] = float("nan")
    for reduction in ("mean", "none"):
        crit = HBCELoss(dag, edge_weight=[1.0, 2.0, 0.5, 1.0, 3.0], scale=0.8, mode=mode, temperature=0.3,
                        reduction=reduction, pos_weight=torch.full((dag.num_labels,), 2.0, dtype=torch.float64))
        with hbce_backend(backend, layout):
            assert torch.autograd.gradgradcheck(lambda z, c=crit: c(z, y), (x,))


def test_hessian_vector_product_equals_the_reference(dag: Hierarchy) -> None:
    """A gradient penalty ‖∇loss‖² backpropagates (the probe that used to fail with an in-place error), and the
    fused backends' Hessian-vector product equals the reference's."""
    torch.manual_seed(7)
    x = torch.randn(8, dag.num_labels, requires_grad=True)
    y = (torch.rand(8, dag.num_labels) < 0.5).float()
    vec = torch.randn(8, dag.num_labels)
    crit = HBCELoss(dag, mode="hinge", scale=2.0)
    results = {}
    for backend in ("reference", "fused", "fused_cpu"):
        with hbce_backend(backend):
            (g,) = torch.autograd.grad(crit(x, y), x, create_graph=True)
            (hvp,) = torch.autograd.grad(g, x, vec)
            (gp,) = torch.autograd.grad(crit(x, y), x, create_graph=True)
            gp.pow(2).sum().backward()
        results[backend] = hvp
    torch.testing.assert_close(results["fused"], results["reference"])
    torch.testing.assert_close(results["fused_cpu"], results["reference"])


# ---------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_compile_fullgraph_per_backend(dag: Hierarchy, mode: str, backend: str) -> None:
    """torch.compile(fullgraph=True) of a forced backend traces without graph breaks (aot_eager) and equals eager,
    masked (NaN, ignore_index) and unmasked, both layouts."""
    y_masked = (torch.rand(8, 6) < 0.5).float()
    y_masked[0, 0], y_masked[1, 1] = float("nan"), -1.0
    y_clean = (torch.rand(8, 6) < 0.5).float()
    for y in (y_masked, y_clean):
        for layout in ("dense", "gather"):
            crit = HBCELoss(dag, edge_weight=[1, 2, 3, 4, 5], mode=mode, ignore_index=-1,
                            pos_weight=torch.full((6,), 2.0))
            x = torch.randn(8, 6, requires_grad=True)
            torch._dynamo.reset()
            with hbce_backend(backend, layout):
                compiled = torch.compile(crit, fullgraph=True, backend="aot_eager")
                loss = compiled(x, y)
                (g,) = torch.autograd.grad(loss, x)
                eager = crit(x, y)
                (g_eager,) = torch.autograd.grad(eager, x)
            torch.testing.assert_close(loss, eager)
            torch.testing.assert_close(g, g_eager)


def test_compile_with_inductor_equals_eager(dag: Hierarchy) -> None:
    """The default dispatch under torch.compile with Inductor (the generic fused kernel) equals the eager CPU
    kernel with its shortcuts."""
    crit = HBCELoss(chexpert_hierarchy(), reduction="mean")
    x = torch.randn(64, 21, requires_grad=True)
    y = (torch.rand(64, 21) < 0.3).float()
    torch._dynamo.reset()
    compiled = torch.compile(crit, fullgraph=True)
    loss = compiled(x, y)
    (g,) = torch.autograd.grad(loss, x)
    (g_eager,) = torch.autograd.grad(crit(x, y), x)
    torch.testing.assert_close(loss, crit(x, y))
    torch.testing.assert_close(g, g_eager)


def test_fused_cpu_refuses_to_compile(dag: Hierarchy) -> None:
    """Forcing the CPU shortcuts under torch.compile is refused with a clear error (they read values back)."""
    crit = HBCELoss(dag)
    x, y = torch.randn(4, 6), torch.zeros(4, 6)
    torch._dynamo.reset()
    with hbce_backend("fused_cpu"), pytest.raises(Exception, match="runs only on CPU tensors in eager mode"):
        torch.compile(crit, fullgraph=True, backend="aot_eager")(x, y)


# ---------------------------------------------------------------- nothing read back on the accelerator path
def test_generic_fused_kernel_reads_nothing_back(dag: Hierarchy) -> None:
    """Under FakeTensorMode any read of a value (``.item()``, ``bool(tensor)``, a data-dependent shape) raises: with
    ``validate_args=False`` the generic fused kernel, what CUDA runs, goes through forward and backward for every
    mode, layout, reduction and mask, while the CPU shortcuts and the value checks do read back (so the test can
    fail)."""
    crits = [HBCELoss(dag, mode=m, reduction=r, ignore_index=ii, pos_weight=pw, validate_args=False)
             for m in MODES for r in ("mean", "none") for ii in (None, -1)
             for pw in (None, torch.full((6,), 2.0))]
    checked = HBCELoss(dag)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.randn(7, 6, requires_grad=True)
        y = torch.rand(7, 6)
        for crit in crits:
            for layout in ("dense", "gather"):
                with hbce_backend("fused", layout):
                    crit(x, y).sum().backward()
        with hbce_backend("fused_cpu"), pytest.raises(DataDependentOutputException):
            crits[0](x, y)
        with hbce_backend("fused"), pytest.raises(DataDependentOutputException):
            checked(x, y)


# ---------------------------------------------------------------- the dispatch rule
def test_dispatch_rule(dag: Hierarchy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager CPU logits take 'fused_cpu'; anything else (here: a traced call) 'fused'; probabilities 'reference';
    a forced backend wins; layouts follow E·C and the form."""
    x = torch.zeros(2, 6)
    assert _hbce_backend.select_backend(x, from_logits=True) == "fused_cpu"
    assert _hbce_backend.select_backend(x, from_logits=False) == "reference"
    with hbce_backend("fused"):
        assert _hbce_backend.select_backend(x, from_logits=True) == "fused"
    with hbce_backend("reference"):
        assert _hbce_backend.select_backend(x, from_logits=False) == "reference"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert _hbce_backend.select_backend(x, from_logits=True) == "fused"
    monkeypatch.undo()
    hinge, soft = FORMS["hinge"], FORMS["soft"]
    assert _hbce_backend.select_layout(hinge, 20, 21) == "dense"
    assert _hbce_backend.select_layout(hinge, 5824, 4125) == "gather"
    assert _hbce_backend.select_layout(soft, 20, 21) == "gather"
    assert _hbce_backend.select_layout(hinge, 0, 21) == "gather"
    with hbce_backend(layout="dense"):
        assert _hbce_backend.select_layout(hinge, 5824, 4125) == "dense"
        assert _hbce_backend.select_layout(soft, 20, 21) == "gather"


def test_backend_errors(dag: Hierarchy) -> None:
    """Unknown backends and layouts, and backends that cannot run the call, raise errors naming them."""
    backends = "'reference', 'fused', 'fused_cpu'"
    with pytest.raises(ValueError, match=f"backend must be one of {backends} or None, got 'gpu'"), hbce_backend("gpu"):
        pass
    with pytest.raises(ValueError, match="layout must be one of 'dense', 'gather' or None, got 'sparse'"), \
            hbce_backend(layout="sparse"):
        pass
    probs = torch.rand(3, 6)
    with hbce_backend("fused"), pytest.raises(ValueError, match="the 'fused' HBCE backend reads logits"):
        HBCELoss(dag, from_logits=False)(probs, torch.zeros(3, 6))
    with hbce_backend("reference"):  # restored after the block, also after an error
        pass
    assert _hbce_backend._forced_backend is None and _hbce_backend._forced_layout is None


# ---------------------------------------------------------------- the CPU shortcuts
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (16, 21), (2048, 21), (37, 1001)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["random", "confident", "confident_positive", "soft"])
def test_bce_sum_products_matches_float64_bce(shape: tuple[int, int], dtype: torch.dtype, kind: str) -> None:
    """The CPU product form of Σ BCE equals a float64 BCE sum to a few units in the last place of the result, with
    and without a partial last group, on random logits (some of magnitude 1e4), on confident correct logits (where
    ``Σ softplus(x) − Σ x·y`` cancels) and with soft targets."""
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(*shape, dtype=torch.float64, generator=gen) * 8
    y = (torch.rand(*shape, dtype=torch.float64, generator=gen) < 0.3).double()
    if kind == "random":
        x.view(-1)[:: 7] *= 1e3
    elif kind.startswith("confident"):
        x = (torch.rand(*shape, dtype=torch.float64, generator=gen) * 10 + 12) * (y * 2 - 1)
        if kind == "confident_positive":
            x, y = x.abs(), torch.ones_like(y)
    else:
        y = torch.rand(*shape, dtype=torch.float64, generator=gen)
    x, y = x.to(dtype), y.to(dtype)
    got = _hbce_backend._bce_sum_products(x, y)
    assert got.dtype == dtype and got.shape == ()
    eps = torch.finfo(dtype).eps
    assert abs(float(got) - exact_bce_sum(x, y)) <= 16 * eps * exact_bce_sum(x, y)


def exact_bce_sum(x: torch.Tensor, y: torch.Tensor) -> float:
    """``Σ BCE(x, y)`` in NumPy's extended precision, written without cancellation: ``max(x, 0) − x·y`` is ``>= 0``
    for targets in ``[0, 1]`` and ``log1p(e^(−|x|))`` is taken directly (float64 BCE itself cancels on confident
    negatives)."""
    xs, ys = x.double().numpy().astype(np.longdouble), y.double().numpy().astype(np.longdouble)
    return float((np.maximum(xs, 0) - xs * ys + np.log1p(np.exp(-np.abs(xs)))).sum())


def test_bce_sum_products_infinities_and_nan() -> None:
    """An infinite logit gives an infinite or NaN sum, never a finite one (PyTorch's BCE gives NaN for three of the
    four infinite cases too), and a NaN logit gives NaN."""
    for value, target in ((float("inf"), 0.0), (float("inf"), 1.0), (float("-inf"), 0.0), (float("-inf"), 1.0),
                          (float("nan"), 0.0)):
        x, y = torch.zeros(40), torch.zeros(40)
        x[5], y[5] = value, target
        got = _hbce_backend._bce_sum_products(x, y)
        assert not torch.isfinite(got)
        assert torch.isnan(got) or not torch.isnan(x).any()


@pytest.mark.parametrize("ignore_index", [None, -1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_cpu_target_mask_equals_the_generic_mask(ignore_index: float | None, dtype: torch.dtype) -> None:
    """The CPU mask (NaN-free shortcut, float written by the comparison) equals the element-wise one as a float
    0/1 mask, and skips the mask entirely for a clean float target."""
    torch.manual_seed(9)
    y = (torch.rand(6, 5) < 0.5).to(dtype)
    y[0, 0] = -1
    if dtype.is_floating_point:
        y[1, 1] = float("nan")
    for target in (y, (torch.rand(6, 5) < 0.5).to(dtype)):
        clean, mask = _hbce_backend._cpu_target_mask(target, ignore_index, torch.float32)
        g_clean, g_mask = target_mask(target, ignore_index, nan_shortcut=False)
        torch.testing.assert_close(clean.float(), g_clean.float())
        if mask is None:
            assert g_mask is None or bool(g_mask.all())
        else:
            assert mask.dtype == torch.float32
            torch.testing.assert_close(mask, g_mask.float())
    clean_float = (torch.rand(4, 5) < 0.5).float()
    assert _hbce_backend._cpu_target_mask(clean_float, None, torch.float32)[1] is None
    assert target_mask(clean_float, None, nan_shortcut=False)[1] is not None


@pytest.fixture(autouse=True)
def _no_forced_backend() -> Iterator[None]:
    """No test leaves a backend forced."""
    yield
    assert _hbce_backend._forced_backend is None and _hbce_backend._forced_layout is None
