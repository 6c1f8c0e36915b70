"""Probes of HBCE: each defect reproduced first, then held fixed on every backend and edge layout.

A target that requires grad (distillation) gets BCE's gradient; the loss value on confident batches is BCE's to
rounding; every numeric type PyTorch users pass for ``pos_weight`` and ``edge_weight`` is accepted or refused with
a message saying what to pass; ``torch.func`` transforms work; settings are resolved once, in ``__init__``.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from hierloss import HBCELoss, Hierarchy, HierarchyPenalty, _penalty_forms
from hierloss._penalty_forms import MODES
from hierloss.functional import hbce_loss, hierarchy_penalty
from hierloss.losses import _edges, _hbce_backend, hbce_backend

#: Every way HBCE can run: (backend, layout); pair forms always gather.
KERNELS = [("reference", None), ("fused", "dense"), ("fused", "gather"), ("fused_cpu", "dense"),
           ("fused_cpu", "gather")]
DAG = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "iso": []})  # 6 labels, 5 edges
WEIGHTS = [0.5, 1.0, 2.0, 0.25, 1.5]


@pytest.fixture(autouse=True)
def _no_forced_backend() -> Iterator[None]:
    """No test leaves a backend forced."""
    yield
    assert _hbce_backend._forced_backend is None and _hbce_backend._forced_layout is None


def make_target(kind: str, shape: tuple[int, int] = (7, 6), seed: int = 2) -> Tensor:
    """A float64 target: 0/1 ("clean"), with NaN, with ignore_index -1, or soft values."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(*shape, generator=gen) < 0.4).double()
    if kind == "nan":
        y[0, 1], y[2, :] = math.nan, math.nan
    elif kind == "ignore":
        y[1, 0], y[3, 2] = -1.0, -1.0
    elif kind == "soft":
        y = torch.rand(*shape, generator=gen, dtype=torch.float64)
    return y


# ---------------------------------------------------------------- 1. the gradient with respect to the target
def test_issue_example_target_gradient() -> None:
    """The reported example: the gradient with respect to a target that requires grad is BCE's, [[-0.15, 0.10]], in
    the default mode and in 'soft' mode (which used to fail with 'not enough values to unpack')."""
    h = Hierarchy.from_edges([("a", "b")])
    x = torch.tensor([[0.3, -0.2]])
    for mode in ("logit_hinge", "soft"):
        y = torch.tensor([[0.7, 0.4]], requires_grad=True)
        (grad,) = torch.autograd.grad(HBCELoss(h, mode=mode)(x, y), y)
        torch.testing.assert_close(grad, torch.tensor([[-0.15, 0.10]]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["clean", "nan", "ignore", "soft"])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_target_gradient_equals_the_reference(mode: str, reduction: str, target_kind: str,
                                              with_pos_weight: bool) -> None:
    """Every backend and layout gives the reference's gradients with respect to both the input and the target (for a
    non-uniform upstream gradient), for every mode, reduction, NaN mask, ignore_index and pos_weight."""
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(7, 6, dtype=torch.float64, generator=gen) * 2
    y0 = make_target(target_kind)
    pw = torch.rand(6, dtype=torch.float64, generator=gen) + 0.5 if with_pos_weight else None
    crit = HBCELoss(DAG, edge_weight=WEIGHTS, scale=0.8, mode=mode, temperature=0.2, reduction=reduction,
                    pos_weight=pw, ignore_index=-1 if target_kind == "ignore" else None)
    results = {}
    for kernel in KERNELS:
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        with hbce_backend(*kernel):
            out = crit(x, y)
        upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
        results[kernel] = (out.detach(), *torch.autograd.grad(out, (x, y), upstream))
    want = results[("reference", None)]
    for kernel, got in results.items():
        for g, w, what in zip(got, want, ("value", "input gradient", "target gradient")):
            torch.testing.assert_close(g, w, msg=f"{kernel} {what}")
    masked = torch.isnan(y0) | (y0 == -1)
    assert bool((want[2][masked] == 0).all())  # masked targets get no gradient


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_target_gradient_with_scale_zero_is_bce_with_logits(reduction: str, with_pos_weight: bool) -> None:
    """With scale=0 the gradient with respect to the target equals BCEWithLogitsLoss's (per-sample means for
    'none' and 'sum', as HBCE's reductions are over samples), on every backend and layout."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 6, dtype=torch.float64, generator=gen) * 3
    y0 = torch.rand(9, 6, dtype=torch.float64, generator=gen)
    pw = torch.rand(6, dtype=torch.float64, generator=gen) + 0.5 if with_pos_weight else None
    y = y0.clone().requires_grad_()
    per_sample = torch.nn.BCEWithLogitsLoss(pos_weight=pw, reduction="none")(x, y).mean(1)
    want_out = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    (want,) = torch.autograd.grad(want_out.sum(), y)
    crit = HBCELoss(DAG, scale=0.0, reduction=reduction, pos_weight=pw)
    for kernel in KERNELS:
        y = y0.clone().requires_grad_()
        with hbce_backend(*kernel):
            out = crit(x, y)
        (got,) = torch.autograd.grad(out.sum(), y)
        torch.testing.assert_close(got, want, msg=str(kernel))


@pytest.mark.parametrize(("backend", "layout"), KERNELS)
def test_gradcheck_with_respect_to_input_and_target(backend: str, layout: str | None) -> None:
    """float64 gradcheck and gradgradcheck with respect to the input and the target together, on every backend and
    layout (the second order differentiates the reference)."""
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(4, 6, dtype=torch.float64, generator=gen) * 2).requires_grad_()
    y = torch.rand(4, 6, dtype=torch.float64, generator=gen).requires_grad_()
    for mode in ("logit_hinge", "soft"):
        crit = HBCELoss(DAG, edge_weight=WEIGHTS, mode=mode, scale=0.8, pos_weight=[2.0] * 6)
        with hbce_backend(backend, layout):
            assert torch.autograd.gradcheck(crit, (x, y))
            assert torch.autograd.gradgradcheck(crit, (x, y))


def test_hierarchy_penalty_adds_nothing_to_the_target_gradient() -> None:
    """The penalty depends on predictions only: BCE + HierarchyPenalty has BCE's target gradient, and HBCELoss's
    target gradient is the same."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(5, 6, generator=gen, requires_grad=True)
    y = torch.rand(5, 6, generator=gen, requires_grad=True)
    composed = F.binary_cross_entropy_with_logits(x, y) + HierarchyPenalty(DAG, scale=2.0)(x)
    (g_composed,) = torch.autograd.grad(composed, y)
    (g_bce,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(x, y), y)
    (g_hbce,) = torch.autograd.grad(HBCELoss(DAG, scale=2.0)(x, y), y)
    torch.testing.assert_close(g_composed, g_bce)
    torch.testing.assert_close(g_hbce, g_bce)


# ---------------------------------------------------------------- 2. the value on confident batches
def exact_bce(x: Tensor, y: Tensor) -> np.ndarray:
    """Per-element BCE in NumPy's extended precision, written without cancellation (``max(x, 0) − x·y >= 0``)."""
    xs, ys = x.double().numpy().astype(np.longdouble), y.double().numpy().astype(np.longdouble)
    return np.maximum(xs, 0) - xs * ys + np.log1p(np.exp(-np.abs(xs)))


def confident_batch(shape: tuple[int, int], seed: int, positive_only: bool = False) -> tuple[Tensor, Tensor]:
    """Logits with ``|x| >= 12`` and the targets they predict correctly (loss per element below 1e-5)."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(*shape, generator=gen) < 0.5).float()
    if positive_only:
        y = torch.ones(*shape)
    x = (torch.rand(*shape, generator=gen) * 10 + 12) * (y * 2 - 1)
    return x, y


def test_issue_example_confident_batch() -> None:
    """The reported batch (100,000 x 2, |logit| >= 12): scale=0 gives BCE's value to float32 rounding on every
    backend, where the fused kernel used to be 13% off (two large float32 sums cancelling)."""
    h = Hierarchy.from_edges([("a", "b")])
    for positive_only in (True, False):  # all positive: BCE itself is exact there; mixed: BCE rounds too
        x, y = confident_batch((100_000, 2), seed=0, positive_only=positive_only)
        exact = float(exact_bce(x, y).mean())
        bce_error = abs(F.binary_cross_entropy_with_logits(x, y).item() - exact)
        for kernel in KERNELS:
            with hbce_backend(*kernel):
                got = HBCELoss(h, scale=0.0)(x, y).item()
            assert abs(got - exact) <= bce_error + 1e-6 * exact, (kernel, positive_only, got, exact)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["confident", "confident_positive", "random"])
@pytest.mark.parametrize("rows", [16, 4096])
def test_value_within_bce_rounding(seed: int, kind: str, rows: int) -> None:
    """On random confident and unconfident batches, small and large enough for the CPU product form, every backend's
    scale=0 value (mean, sum and per sample) is as close to the extended-precision value as BCE's own, up to a few
    units in the last place."""
    if kind == "random":
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(rows, 21, generator=gen) * 4, (torch.rand(rows, 21, generator=gen) < 0.3).float()
    else:
        x, y = confident_batch((rows, 21), seed, positive_only=kind == "confident_positive")
    h = Hierarchy.from_edges([(f"l{i}", f"l{i + 1}") for i in range(20)])  # 21 labels, a chain of 20 edges
    exact = exact_bce(x, y)
    want = {"mean": float(exact.mean()), "sum": float(exact.mean(1).sum()), "none": exact.mean(1).astype(float)}
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none").double()
    bce_value = {"mean": F.binary_cross_entropy_with_logits(x, y).double(), "sum": bce.mean(1).sum(),
                 "none": bce.mean(1)}
    eps = torch.finfo(torch.float32).eps
    for reduction in ("mean", "sum", "none"):
        exact_value = torch.as_tensor(want[reduction], dtype=torch.float64)
        allowed = (bce_value[reduction] - exact_value).abs() + 8 * eps * exact_value.abs()
        for kernel in KERNELS:
            with hbce_backend(*kernel):
                got = HBCELoss(h, scale=0.0, reduction=reduction)(x, y).double()
            assert bool(((got - exact_value).abs() <= allowed).all()), (reduction, kernel)


# ---------------------------------------------------------------- 3. the numeric types users pass
POS_WEIGHTS = {
    "list": [1.0, 2.0, 0.5, 1.0, 3.0, 1.5],
    "tuple": (1.0, 2.0, 0.5, 1.0, 3.0, 1.5),
    "numpy float64": np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.5]),
    "numpy float32": np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.5], dtype=np.float32),
    "tensor": torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.5]),
}
SCALAR_POS_WEIGHTS = {"float": 2.0, "int": 2, "numpy float32": np.float32(2.0), "numpy int64": np.int64(2),
                      "0-d tensor": torch.tensor(2.0), "integer tensor": torch.tensor(2)}


def test_pos_weight_accepts_sequences_arrays_and_tensors() -> None:
    """``hbce_loss(x, y, h, pos_weight=[1., 2., ...])`` (which raised AttributeError: 'list' object has no attribute
    'shape'), NumPy arrays and tuples give the tensor's loss, in the functional form and the module."""
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(5, 6, generator=gen), (torch.rand(5, 6, generator=gen) < 0.5).float()
    want = hbce_loss(x, y, DAG, pos_weight=POS_WEIGHTS["tensor"])
    for name, value in POS_WEIGHTS.items():
        torch.testing.assert_close(hbce_loss(x, y, DAG, pos_weight=value), want, msg=name)
        torch.testing.assert_close(HBCELoss(DAG, pos_weight=value)(x, y), want, msg=name)


def test_pos_weight_accepts_one_number_for_every_label() -> None:
    """A Python, NumPy or 0-d tensor number is the same positive weight for every label (as a 0-d pos_weight
    broadcasts in BCEWithLogitsLoss)."""
    gen = torch.Generator().manual_seed(7)
    x, y = torch.randn(5, 6, generator=gen), (torch.rand(5, 6, generator=gen) < 0.5).float()
    want = hbce_loss(x, y, DAG, pos_weight=torch.full((6,), 2.0))
    for name, value in SCALAR_POS_WEIGHTS.items():
        torch.testing.assert_close(hbce_loss(x, y, DAG, pos_weight=value), want, msg=name)
        crit = HBCELoss(DAG, pos_weight=value)
        assert crit.pos_weight is not None and crit.pos_weight.shape == (6,)
        torch.testing.assert_close(crit(x, y), want, msg=name)


def test_pos_weight_refuses_what_is_not_numbers() -> None:
    """Booleans, strings, mappings and a wrong length are refused with a message saying what to pass."""
    x, y = torch.zeros(2, 6), torch.zeros(2, 6)
    kinds = re.escape("pos_weight must be a number (the same weight for every label), a sequence or NumPy array of C "
                      "numbers, or a 0-d or (C,) tensor")
    for bad, name in ((True, "bool"), ("2", "str"), ({"a": 1.0}, "dict")):
        with pytest.raises(TypeError, match=f"{kinds}; got {name}"):
            hbce_loss(x, y, DAG, pos_weight=bad)
        with pytest.raises(TypeError, match=f"{kinds}; got {name}"):
            HBCELoss(DAG, pos_weight=bad)
    with pytest.raises(TypeError, match=f"{kinds}; could not read a list as numbers"):
        HBCELoss(DAG, pos_weight=["a"] * 6)
    with pytest.raises(TypeError, match=f"{kinds}; got a torch.bool tensor"):
        HBCELoss(DAG, pos_weight=torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"Expected `pos_weight` of shape \(6,\), got \(2,\)"):
        hbce_loss(x, y, DAG, pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"`pos_weight` must be finite and >= 0, but label 'b' is -1\.0"):
        hbce_loss(x, y, DAG, pos_weight=np.array([1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))


EDGE_WEIGHTS = {
    "list": [0.5, 1.0, 2.0, 0.25, 1.5],
    "numpy": np.array([0.5, 1.0, 2.0, 0.25, 1.5]),
    "numpy float32": np.array([0.5, 1.0, 2.0, 0.25, 1.5], dtype=np.float32),
    "tuple": (0.5, 1.0, 2.0, 0.25, 1.5),
    "tensor": torch.tensor([0.5, 1.0, 2.0, 0.25, 1.5], dtype=torch.float64),
}
SCALAR_EDGE_WEIGHTS = {"int": 2, "float": 2.0, "numpy int64": np.int64(2), "numpy float32": np.float32(2.0),
                       "0-d tensor": torch.tensor(2.0), "0-d integer tensor": torch.tensor(2),
                       "numpy 0-d array": np.array(2.0)}


def test_edge_weight_accepts_numpy_and_scalar_tensors() -> None:
    """``edge_weight=np.ones(E)``, ``np.int64(2)`` (which raised TypeError) and a 0-d tensor (which raised
    ValueError) are accepted: arrays per edge, numbers the same on every edge; modules and functional forms alike."""
    gen = torch.Generator().manual_seed(8)
    x, y = torch.randn(5, 6, generator=gen), (torch.rand(5, 6, generator=gen) < 0.5).float()
    for name, value in EDGE_WEIGHTS.items():
        assert HBCELoss(DAG, edge_weight=value).edge_weight.tolist() == WEIGHTS, name
        torch.testing.assert_close(hbce_loss(x, y, DAG, value), HBCELoss(DAG, edge_weight=WEIGHTS)(x, y), msg=name)
        assert HierarchyPenalty(DAG, edge_weight=value).edge_weight.tolist() == WEIGHTS, name
    for name, value in SCALAR_EDGE_WEIGHTS.items():
        assert HBCELoss(DAG, edge_weight=value).edge_weight.tolist() == [2.0] * 5, name
        torch.testing.assert_close(hierarchy_penalty(x, DAG, value), HierarchyPenalty(DAG, edge_weight=2.0)(x),
                                   msg=name)


def test_edge_weight_refuses_what_is_not_numbers() -> None:
    """Booleans, strings, complex numbers, non-numeric sequences and a wrong shape are refused, saying what to
    pass."""
    kinds = re.escape("edge_weight must be a number or 0-d tensor (the same weight on every edge), a sequence, NumPy "
                      "array or 1-D tensor of one weight per edge, a {(parent, child): weight} mapping, or EdgeWeights")
    for bad, got in ((True, "got bool"), (np.bool_(True), "got bool"), ("high", "got str"),
                     (["a"] * 5, "got list holding strings"), (np.ones(5, dtype=complex),
                                                                "got ndarray holding complex numbers"),
                     (torch.ones(5, dtype=torch.bool), "got a torch.bool tensor"), (object(), "got object")):
        with pytest.raises(TypeError, match=f"{kinds}; {re.escape(got)}"):
            HBCELoss(DAG, edge_weight=bad)
    with pytest.raises(ValueError, match=r"Expected 5 edge weights \(one per edge of hierarchy.edges\), got shape "
                                         r"\(5, 1\)"):
        HBCELoss(DAG, edge_weight=np.ones((5, 1)))
    with pytest.raises(ValueError, match=r"weight of edge \('a', 'b'\) is -2\.0; edge weights must be finite"):
        HBCELoss(DAG, edge_weight=np.float64(-2.0))


def test_hyperparameters_accept_numpy_numbers() -> None:
    """scale, threshold and temperature accept NumPy numbers (np.float32 is not a Python float) and give the same
    loss as Python floats."""
    gen = torch.Generator().manual_seed(9)
    x, y = torch.randn(5, 6, generator=gen), (torch.rand(5, 6, generator=gen) < 0.5).float()
    numpy = HBCELoss(DAG, mode="soft", scale=np.float32(0.5), threshold=np.float32(0.4), temperature=np.float64(0.2))
    python = HBCELoss(DAG, mode="soft", scale=0.5, threshold=float(np.float32(0.4)), temperature=0.2)
    torch.testing.assert_close(numpy(x, y), python(x, y))
    assert isinstance(numpy.scale, float)


# ---------------------------------------------------------------- 4. torch.func transforms
def reference_rows(crit: torch.nn.Module, x: Tensor, y: Tensor, wrt: str) -> Tensor:
    """Per-sample gradients from a Python loop of single-sample autograd calls on the reference backend."""
    rows = []
    for i in range(x.shape[0]):
        xi, yi = x[i:i + 1].clone(), y[i:i + 1].clone()
        leaf = (xi if wrt == "input" else yi).requires_grad_()
        with hbce_backend("reference"):
            (grad,) = torch.autograd.grad(crit(xi, yi), leaf)
        rows.append(grad[0])
    return torch.stack(rows)


@pytest.mark.filterwarnings("error::UserWarning")  # no batching-rule fallback (embedding_bag has none)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("backend", "layout"), [*KERNELS, (None, None)])
def test_per_sample_gradients_with_vmap_equal_a_loop(mode: str, backend: str | None, layout: str | None) -> None:
    """``vmap(grad(loss))`` (per-sample gradients, with respect to the input and to the target) equals a loop of
    single-sample gradients, for every mode on every backend and layout, with a NaN target and the default
    validate_args=True (the values of a batched target are not read)."""
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(5, 6, dtype=torch.float64, generator=gen)
    y = (torch.rand(5, 6, generator=gen) < 0.4).double()
    y[1, 2] = math.nan
    crit = HBCELoss(DAG, edge_weight=WEIGHTS, mode=mode, scale=0.7, pos_weight=[1.5] * 6)

    def loss(z: Tensor, t: Tensor) -> Tensor:
        return crit(z[None], t[None])

    with hbce_backend(backend, layout):
        per_input = torch.func.vmap(torch.func.grad(loss))(x, y)
        per_target = torch.func.vmap(torch.func.grad(loss, argnums=1))(x, y.nan_to_num())
    torch.testing.assert_close(per_input, reference_rows(crit, x, y, "input"))
    torch.testing.assert_close(per_target, reference_rows(crit, x, y.nan_to_num(), "target"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("backend", "layout"), [*KERNELS, (None, None)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_func_grad_and_jvp_equal_autograd(mode: str, backend: str | None, layout: str | None,
                                          reduction: str) -> None:
    """``torch.func.grad`` (the default HBCELoss used to fail: its autograd.Function had no setup_context),
    ``torch.func.jvp`` and ``torch.autograd.forward_ad`` equal the reference's autograd, in the input and the target
    directions, for every mode on every backend and layout."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(6, 6, dtype=torch.float64, generator=gen)
    y = torch.rand(6, 6, dtype=torch.float64, generator=gen)
    dx, dy = torch.randn(6, 6, dtype=torch.float64, generator=gen), torch.randn(6, 6, dtype=torch.float64,
                                                                              generator=gen)
    crit = HBCELoss(DAG, edge_weight=WEIGHTS, mode=mode, scale=0.7, reduction=reduction)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    with hbce_backend("reference"):
        out = crit(xr, yr)
    gx, gy = torch.autograd.grad(out.sum(), (xr, yr), retain_graph=True)
    rows_x, rows_y = [], []
    for n in range(out.numel()):  # the Jacobian rows, for the per-sample tangent
        jx, jy = torch.autograd.grad(out.reshape(-1)[n], (xr, yr), retain_graph=True)
        rows_x.append((jx * dx).sum())
        rows_y.append((jy * dy).sum())
    tangent = torch.stack(rows_x).reshape(out.shape) + torch.stack(rows_y).reshape(out.shape)
    with hbce_backend(backend, layout):
        got_gx, got_gy = torch.func.grad(lambda a, b: crit(a, b).sum(), argnums=(0, 1))(x, y)
        value, got_tangent = torch.func.jvp(crit, (x, y), (dx, dy))
        with torch.autograd.forward_ad.dual_level():
            dual = crit(torch.autograd.forward_ad.make_dual(x, dx), torch.autograd.forward_ad.make_dual(y, dy))
            ad_value, ad_tangent = torch.autograd.forward_ad.unpack_dual(dual)
    torch.testing.assert_close(got_gx, gx)
    torch.testing.assert_close(got_gy, gy)
    torch.testing.assert_close(value, out.detach())
    torch.testing.assert_close(got_tangent, tangent)
    torch.testing.assert_close(ad_value, out.detach())
    torch.testing.assert_close(ad_tangent, tangent)


def test_vmap_checks_a_target_it_can_read() -> None:
    """Under vmap the values of a batched target are not checked (they cannot be read), but a target closed over
    by the vmapped function is, and an impossible value is still refused, naming its label."""
    crit = HBCELoss(DAG)
    x = torch.randn(3, 6)
    bad = torch.zeros(1, 6)
    bad[0, 2] = 2.0
    with pytest.raises(ValueError, match=r"column 2 \('c'\) holds 2\.0"):
        torch.func.vmap(torch.func.grad(lambda z: crit(z[None], bad)))(x)
    grads = torch.func.vmap(torch.func.grad(lambda z, t: crit(z[None], t[None])))(x, bad.expand(3, 6))
    assert grads.shape == (3, 6)  # not checked: validate_args=True cannot read a batched target


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("from_logits", [True, False])
def test_hierarchy_penalty_under_func_transforms(mode: str, from_logits: bool) -> None:
    """HierarchyPenalty under ``vmap(grad)`` equals a loop of single-sample gradients, and ``jvp`` equals autograd,
    with the default validate_args=True (probabilities of a batched input are not read)."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(5, 6, dtype=torch.float64, generator=gen)
    x = x if from_logits else torch.sigmoid(x)
    dx = torch.randn(5, 6, dtype=torch.float64, generator=gen)
    pen = HierarchyPenalty(DAG, edge_weight=WEIGHTS, mode=mode, scale=0.7, from_logits=from_logits)
    per_sample = torch.func.vmap(torch.func.grad(lambda z: pen(z[None])))(x)

    def autograd_grad(z: Tensor) -> Tensor:  # 'hard' has no gradient: its output does not require grad
        z = z.clone().requires_grad_()
        out = pen(z)
        return torch.autograd.grad(out, z)[0] if out.requires_grad else torch.zeros_like(z)

    torch.testing.assert_close(per_sample, torch.stack([autograd_grad(x[i:i + 1])[0] for i in range(5)]))
    torch.testing.assert_close(torch.func.jvp(pen, (x,), (dx,))[1], (autograd_grad(x) * dx).sum())


# ---------------------------------------------------------------- 5. settings resolved once
def test_forward_does_not_recheck_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hyper-parameters are checked in ``__init__`` and frozen: ``forward`` calls none of the checks again
    (they used to run on every call)."""
    crit = HBCELoss(DAG, mode="soft", scale=0.5, reduction="sum")
    pen = HierarchyPenalty(DAG, mode="hinge")
    x, y = torch.randn(4, 6), (torch.rand(4, 6) < 0.5).float()
    want, want_pen = crit(x, y), pen(x)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a setting was checked again in forward")

    modules = [importlib.import_module(f"hierloss.losses.{m}") for m in ("hbce", "hierarchy_penalty")]
    for module in (_penalty_forms, _edges, *modules):
        for name in ("check_penalty_args", "resolve_scale", "check_reduction", "resolve_settings"):
            monkeypatch.setattr(module, name, fail, raising=False)
    torch.testing.assert_close(crit(x, y), want)
    torch.testing.assert_close(pen(x), want_pen)


def test_assigning_a_setting_checks_it_and_takes_effect() -> None:
    """Assigning a hyper-parameter (a λ schedule) checks it at once, keeps the old settings on a bad value, and
    takes effect on the next call."""
    crit = HBCELoss(DAG)
    x, y = torch.randn(4, 6), (torch.rand(4, 6) < 0.5).float()
    with pytest.raises(ValueError, match=r"scale must be a finite number >= 0 \(or None for the mode's default\), "
                                         r"got -1"):
        crit.scale = -1
    assert crit.scale == 0.1
    crit.scale = 0.4
    torch.testing.assert_close(crit(x, y), HBCELoss(DAG, scale=0.4)(x, y))
    crit.mode = "soft"
    torch.testing.assert_close(crit(x, y), HBCELoss(DAG, scale=0.4, mode="soft")(x, y))
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        crit.reduction = "avg"
    pen = HierarchyPenalty(DAG)
    pen.reduction = "none"
    assert pen(x).shape == (4,)
