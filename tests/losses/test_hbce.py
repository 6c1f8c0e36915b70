"""Tests for hierloss.losses.hbce: the reference port, PyTorch's BCE, naive loops, gradients and training."""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import HBCELoss, Hierarchy, HierarchyPenalty
from hierloss.datasets import chexpert_hierarchy
from hierloss.edge_weights import ConditionalWeight, FixedWeight
from hierloss.functional import hbce_loss
from hierloss.losses import _hbce_backend, hbce_backend

MODES = ("soft", "hard", "hinge", "squared_hinge", "logit_hinge")
TRAINABLE = ("soft", "hinge", "squared_hinge", "logit_hinge")
DIFFERENCE = ("hinge", "squared_hinge", "logit_hinge")


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node and an isolated label."""
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "iso": []})


def keras_reference(y_true: np.ndarray, y_pred: np.ndarray, edges: list[tuple[int, int]], weights: list[float],
                    reduction: str) -> np.ndarray:
    """A float32 NumPy port of the authors' Keras loss.

    ``keras.losses.binary_crossentropy`` clips predictions to [1e-7, 1 − 1e-7] and averages over the last axis;
    the hierarchy term adds ``w`` for every edge with parent < 0.5 and child > 0.5; Keras' default reduction
    averages over the batch.
    """
    eps = np.float32(1e-7)
    p = np.clip(y_pred.astype(np.float32), eps, np.float32(1.0) - eps)
    y = y_true.astype(np.float32)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    per_sample = bce.mean(axis=-1)
    for (par, chi), w in zip(edges, weights):
        per_sample = per_sample + np.where((y_pred[:, par] < 0.5) & (y_pred[:, chi] > 0.5), np.float32(w),
                                           np.float32(0))
    if reduction == "mean":
        return np.asarray(per_sample.mean(), dtype=np.float32)
    if reduction == "sum":
        return np.asarray(per_sample.sum(), dtype=np.float32)
    return per_sample.astype(np.float32)


def naive_hbce(logits: torch.Tensor, target: torch.Tensor, h: Hierarchy, weights: list[float], scale: float,
               mode: str, threshold: float, temperature: float, edge_reduction: str,
               pos_weight: torch.Tensor | None = None, ignore_index: float | None = None) -> torch.Tensor:
    """Per-sample HBCE written with Python loops over samples, labels and edges (autograd for gradients)."""
    probs = torch.sigmoid(logits)
    rows = []
    for n in range(logits.shape[0]):
        total, count = logits.new_zeros(()), 0
        for c in range(logits.shape[1]):
            t = target[n, c]
            if torch.isnan(t) or (ignore_index is not None and t == ignore_index):
                continue
            pw = 1.0 if pos_weight is None else pos_weight[c]
            x = logits[n, c]
            total = total - (pw * t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
            count += 1
        bce = total / max(count, 1)
        pen = logits.new_zeros(())
        for (p, c), w in zip(h.edge_indices, weights):
            pp, pc = probs[n, p], probs[n, c]
            if mode == "hard":
                term = ((pp < threshold) & (pc > threshold)).to(logits.dtype)
            elif mode == "soft":
                term = torch.sigmoid((threshold - pp) / temperature) * torch.sigmoid((pc - threshold) / temperature)
            elif mode == "hinge":
                term = torch.clamp(pc - pp, min=0)
            elif mode == "logit_hinge":
                term = torch.clamp(logits[n, c] - logits[n, p], min=0)
            else:
                term = torch.clamp(pc - pp, min=0) ** 2
            pen = pen + scale * w * term
        if edge_reduction == "mean" and h.num_edges:
            pen = pen / h.num_edges
        rows.append(bce + pen)
    return torch.stack(rows)


# ---------------------------------------------------------------- the reference, exactly
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("data_driven", [True, False])
def test_hard_mode_reproduces_reference(reduction: str, data_driven: bool) -> None:
    """mode='hard', from_logits=False equals the Keras port in float32 (relative error <= 1e-5)."""
    h = chexpert_hierarchy()
    rng = np.random.default_rng(0)
    y = (rng.random((64, 21)) < 0.3).astype(np.float32)
    p = rng.random((64, 21)).astype(np.float32)
    p[0, :5] = [0.0, 1.0, 1e-9, 1 - 1e-9, 0.5]  # clipping corners
    if data_driven:
        pen = ConditionalWeight().fit(h, (rng.random((200, 21)) < 0.3).astype(np.int64))
        scale, weights = 0.7, (pen.values * 0.7).tolist()
    else:
        pen, scale = FixedWeight(0.1).fit(h), 1.0
        weights = [0.1] * h.num_edges
    loss = HBCELoss(h, edge_weight=pen, scale=scale, mode="hard", from_logits=False, reduction=reduction)
    got = loss(torch.from_numpy(p), torch.from_numpy(y)).numpy()
    want = keras_reference(y, p, list(h.edge_indices), weights, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_hard_mode_gradient_equals_bce_gradient() -> None:
    """The reference penalty has zero gradient: HBCE-hard's gradient equals the clipped BCE's, and with logits
    equals BCEWithLogits'."""
    h = chexpert_hierarchy()
    torch.manual_seed(0)
    p = torch.rand(32, 21, requires_grad=True)
    y = (torch.rand(32, 21) < 0.3).float()
    HBCELoss(h, edge_weight=5.0, mode="hard", from_logits=False)(p, y).backward()
    grad_hbce = p.grad.clone()
    p.grad = None
    pc = p.clamp(1e-7, 1 - 1e-7)
    (-(y * pc.log() + (1 - y) * (1 - pc).log())).mean().backward()
    torch.testing.assert_close(grad_hbce, p.grad, rtol=0, atol=0)
    x = torch.randn(32, 21, requires_grad=True)
    hard = HBCELoss(h, edge_weight=5.0, mode="hard")(x, y)
    assert hard.item() > F.binary_cross_entropy_with_logits(x, y).item()  # the penalty changes the value...
    (g_hard,) = torch.autograd.grad(hard, x)
    (g_bce,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(x, y), x)
    torch.testing.assert_close(g_hard, g_bce)  # ...but not the gradient


# ---------------------------------------------------------------- degenerate cases equal PyTorch
@pytest.mark.parametrize("mode", MODES)
def test_scale_zero_or_no_edges_equals_bce(mode: str) -> None:
    """With scale=0, or a hierarchy without edges, every reduction equals PyTorch's BCE with logits."""
    torch.manual_seed(1)
    x, y = torch.randn(16, 6), (torch.rand(16, 6) < 0.4).float()
    pw = torch.rand(6) + 0.5
    bce = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none").mean(1)
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "e": [], "f": []})
    flat = Hierarchy(list(h.labels))
    for crit in (HBCELoss(h, scale=0.0, mode=mode, pos_weight=pw), HBCELoss(flat, mode=mode, pos_weight=pw)):
        torch.testing.assert_close(crit(x, y), F.binary_cross_entropy_with_logits(x, y, pos_weight=pw))
        crit.reduction = "sum"
        torch.testing.assert_close(crit(x, y), bce.sum())
        crit.reduction = "none"
        torch.testing.assert_close(crit(x, y), bce)


# ---------------------------------------------------------------- naive loops, values and gradients
#: Every way HBCE can run: (backend, layout) as forced with ``hbce_backend``; pair forms always gather.
KERNELS = [("reference", None), ("fused", "dense"), ("fused", "gather"), ("fused_cpu", "dense"),
           ("fused_cpu", "gather")]


@pytest.fixture(params=KERNELS, ids=lambda k: "-".join(filter(None, k)))
def kernel(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """Run a test through every backend and edge layout (see ``hierloss.losses._hbce_backend``)."""
    with hbce_backend(*request.param):
        yield request.param


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("edge_reduction", ["sum", "mean"])
def test_matches_naive_loop(dag: Hierarchy, mode: str, edge_reduction: str, kernel: tuple[str, str | None]) -> None:
    """Values and gradients equal a per-sample, per-edge loop, with pos_weight and NaN / ignored targets, on every
    backend and edge layout."""
    torch.manual_seed(2)
    x = (torch.randn(7, dag.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(7, dag.num_labels) < 0.4).double()
    y[0, 1], y[2, 3], y[4, :] = float("nan"), -1.0, float("nan")
    weights = [0.5, 1.0, 2.0, 0.25, 1.5]
    pw = torch.rand(dag.num_labels, dtype=torch.float64) + 0.5
    crit = HBCELoss(dag, edge_weight=weights, scale=1.3, mode=mode, temperature=0.2, reduction="none",
                    edge_reduction=edge_reduction, pos_weight=pw, ignore_index=-1)
    got = crit(x, y)
    want = naive_hbce(x, y, dag, weights, 1.3, mode, 0.5, 0.2, edge_reduction, pw, -1)
    torch.testing.assert_close(got, want)
    g = torch.rand(7, dtype=torch.float64)
    (got_grad,) = torch.autograd.grad(got, x, g)
    (want_grad,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(got_grad, want_grad)
    assert torch.isfinite(got_grad).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_reduced_loss_matches_naive_loop(dag: Hierarchy, mode: str, reduction: str, with_pos_weight: bool,
                                         kernel: tuple[str, str | None], monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing masked, 'mean' and 'sum' are computed as one total (not per sample) by the fused kernels; value
    and gradient, for an upstream gradient other than 1, equal the reduced naive loop, on every backend and layout
    and with the CPU product form of the softplus sum."""
    monkeypatch.setattr(_hbce_backend, "_PRODUCT_MIN_ELEMENTS", 0)
    torch.manual_seed(21)
    x = (torch.randn(9, dag.num_labels, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.rand(9, dag.num_labels) < 0.4).double()
    y[0, 0] = 0.3  # a soft target
    weights = [0.5, 1.0, 2.0, 0.25, 1.5]
    pw = torch.rand(dag.num_labels, dtype=torch.float64) + 0.5 if with_pos_weight else None
    crit = HBCELoss(dag, edge_weight=weights, scale=0.9, mode=mode, temperature=0.2, reduction=reduction,
                    pos_weight=pw)
    got = crit(x, y) * 2.5
    per_sample = naive_hbce(x, y, dag, weights, 0.9, mode, 0.5, 0.2, "sum" if mode == "hard" else "mean", pw)
    want = (per_sample.mean() if reduction == "mean" else per_sample.sum()) * 2.5
    torch.testing.assert_close(got, want)
    (got_grad,) = torch.autograd.grad(got, x)
    (want_grad,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_behaves_like_bce(dag: Hierarchy, reduction: str) -> None:
    """An empty batch gives what BCEWithLogits gives (NaN mean, zero sum, empty per-sample losses) and a
    backward pass with an empty gradient, instead of a ZeroDivisionError."""
    x = torch.zeros(0, dag.num_labels, requires_grad=True)
    y = torch.zeros(0, dag.num_labels)
    got = HBCELoss(dag, reduction=reduction)(x, y)
    want = F.binary_cross_entropy_with_logits(x, y, reduction=reduction)
    torch.testing.assert_close(got, want.mean(1) if reduction == "none" else want, equal_nan=True)
    got.sum().backward()
    assert x.grad is not None and x.grad.shape == (0, dag.num_labels)


def test_large_batch_equals_bce_and_per_sample_path() -> None:
    """At a batch large enough for the product form (2048 x 21), scale=0 equals PyTorch's BCE, and the default loss
    equals the mean of its per-sample values (computed without the product form), gradients included."""
    h = chexpert_hierarchy()
    torch.manual_seed(23)
    x = (torch.randn(2048, h.num_labels) * 3).requires_grad_()
    y = (torch.rand(2048, h.num_labels) < 0.2).float()
    assert x.numel() >= _hbce_backend._PRODUCT_MIN_ELEMENTS
    torch.testing.assert_close(HBCELoss(h, scale=0.0)(x, y), F.binary_cross_entropy_with_logits(x, y))
    total = HBCELoss(h)(x, y)
    per_sample = HBCELoss(h, reduction="none")(x, y).mean()
    torch.testing.assert_close(total, per_sample)
    (g_total,) = torch.autograd.grad(total, x)
    (g_rows,) = torch.autograd.grad(per_sample, x)
    torch.testing.assert_close(g_total, g_rows)


@pytest.mark.parametrize("mode", TRAINABLE)
def test_gradcheck_float64(dag: Hierarchy, mode: str, kernel: tuple[str, str | None]) -> None:
    """float64 gradcheck of every trainable mode on every backend and edge layout (the fused kernels' analytic
    backward)."""
    torch.manual_seed(3)
    x = (torch.randn(5, dag.num_labels, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(5, dag.num_labels) < 0.5).double()
    y[1, 2] = float("nan")
    crit = HBCELoss(dag, edge_weight=[1.0, 2.0, 0.5, 1.0, 3.0], scale=0.8, mode=mode, temperature=0.3,
                    reduction="none", pos_weight=torch.full((dag.num_labels,), 2.0, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda z: crit(z, y), (x,))


def test_logit_hinge_is_positive_on_the_same_edges_as_hinge(dag: Hierarchy) -> None:
    """The logit hinge is max(0, z_child − z_parent): zero exactly where the probability hinge is zero, and its
    gradient does not vanish where the probabilities saturate (both logits far below zero)."""
    torch.manual_seed(11)
    x = torch.randn(64, dag.num_labels, dtype=torch.float64) * 3
    per_edge = dict(reduction="none", edge_reduction="sum", scale=1.0)
    for i, (par, chi) in enumerate(dag.edge_indices):
        weights = [float(k == i) for k in range(dag.num_edges)]
        logit = HierarchyPenalty(dag, edge_weight=weights, mode="logit_hinge", **per_edge)(x)
        prob = HierarchyPenalty(dag, edge_weight=weights, mode="hinge", **per_edge)(x)
        torch.testing.assert_close(logit, (x[:, chi] - x[:, par]).clamp_min(0))
        assert torch.equal(logit > 0, prob > 0)
    h = Hierarchy.from_edges([("p", "c")])
    z = torch.tensor([[-30.0, -20.0]], dtype=torch.float64, requires_grad=True)  # p ≈ 1e-13 < c ≈ 2e-9
    (g_logit,) = torch.autograd.grad(HierarchyPenalty(h, mode="logit_hinge", scale=1.0)(z), z)
    (g_prob,) = torch.autograd.grad(HierarchyPenalty(h, mode="hinge", scale=1.0)(z), z)
    assert g_logit.tolist() == [[-1.0, 1.0]]
    assert g_prob.abs().max() < 1e-8


def test_default_scale_depends_on_the_mode(dag: Hierarchy) -> None:
    """scale=None is 0.1 for the default 'logit_hinge' and 1.0 for every other mode; an explicit scale wins."""
    assert HBCELoss(dag).mode == "logit_hinge" and HBCELoss(dag).scale == 0.1
    assert HierarchyPenalty(dag).scale == 0.1
    for mode in ("soft", "hard", "hinge", "squared_hinge"):
        assert HBCELoss(dag, mode=mode).scale == 1.0 and HierarchyPenalty(dag, mode=mode).scale == 1.0
    assert HBCELoss(dag, scale=2.0).scale == 2.0
    x, y = torch.randn(4, 6), (torch.rand(4, 6) < 0.5).float()
    torch.testing.assert_close(hbce_loss(x, y, dag),
                               hbce_loss(x, y, dag, scale=0.1, mode="logit_hinge"))


def test_from_probabilities_matches_from_logits(dag: Hierarchy) -> None:
    """Away from the clipping range, from_logits=False on sigmoid(x) equals from_logits=True on x."""
    torch.manual_seed(4)
    x = torch.randn(9, dag.num_labels, dtype=torch.float64)
    y = (torch.rand(9, dag.num_labels) < 0.5).double()
    for mode in MODES:
        a = HBCELoss(dag, mode=mode)(x, y)
        b = HBCELoss(dag, mode=mode, from_logits=False)(torch.sigmoid(x), y)
        torch.testing.assert_close(a, b)


def test_extreme_logits_stay_finite(dag: Hierarchy) -> None:
    """±100 logits give a finite loss and finite gradients in every mode."""
    x = torch.tensor([[100.0, -100.0, 100.0, -100.0, 100.0, -100.0]] * 3, requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 1.0]] * 3)
    for mode in MODES:
        loss = HBCELoss(dag, mode=mode, scale=10.0)(x, y)
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    want = F.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(HBCELoss(dag, scale=0.0)(x, y), want)


# ---------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_hard_penalty_zero_iff_coherent_at_threshold(probs: list[float]) -> None:
    """The hard penalty is zero exactly when no edge has parent < 0.5 < child."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "iso": []})
    p = torch.tensor([probs])
    pen = HierarchyPenalty(h, mode="hard", from_logits=False)(p)
    violated = any(probs[i] < 0.5 < probs[j] for i, j in h.edge_indices)
    assert (pen.item() > 0) == violated


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 0.99), st.floats(0.01, 0.98), st.floats(0.001, 0.02),
       st.sampled_from(list(TRAINABLE)))
def test_trainable_penalties_nonnegative_and_monotone(parent: float, child: float, step: float, mode: str) -> None:
    """Trainable penalties are >= 0, never decrease as the child rises, never increase as the parent rises."""
    h = Hierarchy.from_edges([("p", "c")])
    pen = HierarchyPenalty(h, mode=mode, from_logits=False, reduction="none", temperature=0.1)
    base = pen(torch.tensor([[parent, child]], dtype=torch.float64))
    higher_child = pen(torch.tensor([[parent, min(child + step, 1.0)]], dtype=torch.float64))
    higher_parent = pen(torch.tensor([[min(parent + step, 1.0), child]], dtype=torch.float64))
    assert base.item() >= 0
    assert higher_child.item() >= base.item() - 1e-12
    assert higher_parent.item() <= base.item() + 1e-12


def test_soft_tends_to_hard_as_temperature_vanishes(dag: Hierarchy) -> None:
    """As temperature → 0 the soft penalty converges to the hard indicator (values away from the threshold)."""
    p = torch.tensor([[0.2, 0.9, 0.4, 0.7, 0.1, 0.3], [0.8, 0.1, 0.9, 0.3, 0.6, 0.2]], dtype=torch.float64)
    hard = HierarchyPenalty(dag, mode="hard", from_logits=False, reduction="none", edge_reduction="sum")(p)
    for tau, tol in ((0.1, 0.2), (0.01, 1e-6), (0.001, 1e-12)):
        soft = HierarchyPenalty(dag, mode="soft", temperature=tau, from_logits=False, reduction="none",
                                edge_reduction="sum")(p)
        torch.testing.assert_close(soft, hard, atol=tol, rtol=0)


def test_soft_gradient_raises_parent_lowers_child() -> None:
    """On a violation, descending the soft penalty raises the parent logit and lowers the child logit."""
    h = Hierarchy.from_edges([("p", "c")])
    x = torch.tensor([[-0.5, 0.5]], requires_grad=True)
    for mode in TRAINABLE:
        (grad,) = torch.autograd.grad(HierarchyPenalty(h, mode=mode, temperature=0.5)(x), x)
        assert grad[0, 0] < 0 < grad[0, 1]


# ---------------------------------------------------------------- penalties argument
def test_penalty_forms_agree(dag: Hierarchy) -> None:
    """Float, sequence, tensor, mapping and EdgeWeights give the same buffer."""
    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    mapping = dict(zip(dag.edges, values))
    fitted = ConditionalWeight().fit(dag, (np.random.default_rng(5).random((50, 6)) < 0.5).astype(int))
    for form, want in ((values, values), (torch.tensor(values), values), (mapping, values),
                       (0.25, [0.25] * 5), (fitted, fitted.values.tolist())):
        got = HBCELoss(dag, edge_weight=form).edge_weight.tolist()
        assert got == pytest.approx(want)


def test_edge_weight_errors(dag: Hierarchy) -> None:
    """Unknown, missing, misaligned, negative and foreign edge weights are named in the error."""
    mapping = dict.fromkeys(dag.edges, 1.0)
    with pytest.raises(ValueError, match=r"edge_weight names edges that are not in hierarchy.edges: \[\('a', 'd'\)\]"):
        HBCELoss(dag, edge_weight={**mapping, ("a", "d"): 1.0})
    with pytest.raises(ValueError, match=r"edge_weight is missing edges of hierarchy.edges: \[\('c', 'e'\)\]"):
        HBCELoss(dag, edge_weight={e: 1.0 for e in dag.edges[:-1]})
    with pytest.raises(ValueError, match=r"Expected 5 edge weights \(one per edge of hierarchy.edges\), got shape"):
        HBCELoss(dag, edge_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"weight of edge \('b', 'd'\) is -1\.0; edge weights must be finite and >= 0"):
        HBCELoss(dag, edge_weight=[1.0, 1.0, -1.0, 1.0, 1.0])
    other = Hierarchy.from_edges([("x", "y")])
    with pytest.raises(ValueError, match="edge_weight was fitted on another hierarchy"):
        HBCELoss(dag, edge_weight=FixedWeight(1.0).fit(other))
    with pytest.raises(TypeError, match="got str"):
        HBCELoss(dag, edge_weight="high")
    with pytest.raises(ValueError, match=r"with closure=True fit it on hierarchy\.closure"):
        HBCELoss(dag, edge_weight=FixedWeight(1.0).fit(dag), closure=True)


def test_closure_penalises_ancestor_pairs() -> None:
    """closure=True adds the grandparent → grandchild pair to the penalised edges."""
    h = Hierarchy.from_dict({"a": ["b"], "b": ["c"]})
    p = torch.tensor([[0.1, 0.5, 0.9]])
    direct = HierarchyPenalty(h, mode="hinge", from_logits=False, edge_reduction="sum")(p)
    closed = HierarchyPenalty(h, mode="hinge", from_logits=False, edge_reduction="sum", closure=True)(p)
    torch.testing.assert_close(direct, torch.tensor(0.8))
    torch.testing.assert_close(closed, torch.tensor(0.8 + 0.8))
    assert HBCELoss(h, closure=True).edge_index.shape == (2, 3)


def test_argument_errors(dag: Hierarchy) -> None:
    """Bad hyper-parameters and shapes raise errors quoting the offending value."""
    with pytest.raises(ValueError, match="mode must be one of 'logit_hinge', 'hinge', 'squared_hinge', "
                                         "'soft', 'hard', got 'fuzzy'"):
        HBCELoss(dag, mode="fuzzy")
    for bad in (-0.5, float("nan"), float("inf"), "1"):
        want = f"scale must be a finite number >= 0 (or None for the mode's default), got {bad!r}"
        with pytest.raises(ValueError, match=re.escape(want)):
            HBCELoss(dag, scale=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"threshold must be a probability in \(0, 1\), got 1\.5"):
        HBCELoss(dag, threshold=1.5)
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got 0"):
        HBCELoss(dag, temperature=0)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        HBCELoss(dag, reduction="avg")
    with pytest.raises(ValueError, match="edge_reduction must be 'sum', 'mean' or None, got 'max'"):
        HBCELoss(dag, edge_reduction="max")
    with pytest.raises(ValueError, match=r"Expected `pos_weight` of shape \(6,\), got \(5,\)"):
        HBCELoss(dag, pos_weight=torch.ones(5))
    crit = HBCELoss(dag)
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 6\), got \(4, 5\)"):
        crit(torch.zeros(4, 5), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(4, 6\) like `input`, got \(4, 5\)"):
        crit(torch.zeros(4, 6), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 6\), got \(6,\)"):
        hbce_loss(torch.zeros(6), torch.zeros(6), dag)


# ---------------------------------------------------------------- module mechanics
def test_module_equals_function(dag: Hierarchy) -> None:
    """HBCELoss.forward is the functional hbce_loss with the module's buffers."""
    x, y = torch.randn(8, 6), (torch.rand(8, 6) < 0.5).float()
    crit = HBCELoss(dag, edge_weight=[1, 2, 3, 4, 5], scale=0.3, mode="soft", temperature=0.2)
    want = hbce_loss(x, y, dag, [1.0, 2, 3, 4, 5], scale=0.3, mode="soft",
                     temperature=0.2)
    torch.testing.assert_close(crit(x, y), want)
    pen = HierarchyPenalty(dag, edge_weight=[1, 2, 3, 4, 5], scale=0.3)
    torch.testing.assert_close(HBCELoss(dag, edge_weight=[1, 2, 3, 4, 5], scale=0.3)(x, y),
                               F.binary_cross_entropy_with_logits(x, y) + pen(x))


def test_pickle_state_dict_and_dtypes(dag: Hierarchy) -> None:
    """Pickling and state_dict round trip; .half()/.double() keep the edge index and give matching losses."""
    x, y = torch.randn(8, 6), (torch.rand(8, 6) < 0.5).float()
    crit = HBCELoss(dag, edge_weight=[1, 2, 3, 4, 5], pos_weight=torch.full((6,), 2.0))
    clone = pickle.loads(pickle.dumps(crit))
    torch.testing.assert_close(clone(x, y), crit(x, y))
    buf = io.BytesIO()
    torch.save(crit.state_dict(), buf)
    buf.seek(0)
    fresh = HBCELoss(dag, pos_weight=torch.ones(6))
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(x, y), crit(x, y))
    assert set(crit.state_dict()) == {"edge_index", "edge_weight", "pos_weight"}
    half = pickle.loads(pickle.dumps(crit)).half()
    assert half.edge_index.dtype == torch.long and half.edge_weight.dtype == torch.float16
    out = half(x.half(), y.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, crit(x.half().float(), y), rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(crit.double()(x.double(), y.double()), crit(x, y).double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_float32(dag: Hierarchy, dtype: torch.dtype) -> None:
    """Under CPU bf16/fp16 autocast the loss is float32 and equals the float32 loss on the same low-precision logits."""
    lin = torch.nn.Linear(4, 6)
    feats, y = torch.randn(8, 4), (torch.rand(8, 6) < 0.5).float()
    crit = HBCELoss(dag)
    with torch.autocast("cpu", dtype=dtype):
        logits = lin(feats)
        loss = crit(logits, y)
    assert logits.dtype == dtype and loss.dtype == torch.float32
    torch.testing.assert_close(loss, crit(logits.float(), y))
    loss.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("from_logits", [True, False])
def test_compile_fullgraph(dag: Hierarchy, mode: str, from_logits: bool) -> None:
    """torch.compile(fullgraph=True) traces forward and backward without graph breaks (aot_eager backend), with
    masking and pos_weight on."""
    crit = HBCELoss(dag, edge_weight=[1, 2, 3, 4, 5], mode=mode, from_logits=from_logits, ignore_index=-1,
                    pos_weight=torch.full((6,), 2.0))
    x = torch.randn(8, 6) if from_logits else torch.rand(8, 6)
    x.requires_grad_()
    y = (torch.rand(8, 6) < 0.5).float()
    y[0, 0], y[1, 1] = float("nan"), -1.0
    torch._dynamo.reset()  # one cache entry per parametrisation would exceed Dynamo's recompile limit
    compiled = torch.compile(crit, fullgraph=True, backend="aot_eager")
    loss = compiled(x, y)
    (g,) = torch.autograd.grad(loss, x)
    (g_eager,) = torch.autograd.grad(crit(x, y), x)
    torch.testing.assert_close(loss, crit(x, y))
    torch.testing.assert_close(g, g_eager)


@pytest.mark.parametrize(("mode", "attribute", "values"), [("logit_hinge", "scale", (0.1, 0.25, 0.5)),
                                                          ("soft", "temperature", (0.05, 0.1, 0.2)),
                                                          ("hard", "threshold", (0.5, 0.6, 0.7))])
def test_compile_fullgraph_with_changing_hyperparameters(dag: Hierarchy, mode: str, attribute: str,
                                                        values: tuple[float, ...]) -> None:
    """A compiled loss keeps tracing without graph breaks when λ, the temperature or the threshold change between
    calls (a λ schedule: Dynamo then traces them as symbolic floats), on the unmasked one-total path."""
    crit = HBCELoss(dag, mode=mode)
    x = torch.randn(8, 6, requires_grad=True)
    y = (torch.rand(8, 6) < 0.5).float()
    torch._dynamo.reset()
    compiled = torch.compile(crit, fullgraph=True, backend="aot_eager")
    for value in values:
        setattr(crit, attribute, value)
        loss = compiled(x, y)
        (g,) = torch.autograd.grad(loss, x)
        (g_eager,) = torch.autograd.grad(crit(x, y), x)
        torch.testing.assert_close(loss, crit(x, y))
        torch.testing.assert_close(g, g_eager)


# ---------------------------------------------------------------- masking
def test_ignore_index_and_nan_are_masked_out_of_the_bce(dag: Hierarchy) -> None:
    """NaN and ignore_index targets leave the BCE mean of their sample (PyTorch's BCE over the valid entries only)
    and get no BCE gradient; a sample with no valid target contributes its penalty alone."""
    torch.manual_seed(6)
    x = torch.randn(5, 6, requires_grad=True)
    y = (torch.rand(5, 6) < 0.5).float()
    y[0, 1], y[1, 2], y[1, 4], y[2] = float("nan"), -1.0, float("nan"), float("nan")
    valid = ~(torch.isnan(y) | (y == -1))
    per = HBCELoss(dag, scale=0.0, ignore_index=-1, reduction="none")(x, y)
    elementwise = F.binary_cross_entropy_with_logits(x, torch.where(valid, y, 0.0), reduction="none")
    for n in range(5):
        want = elementwise[n][valid[n]].mean() if valid[n].any() else torch.tensor(0.0)
        torch.testing.assert_close(per[n], want)
    (grad,) = torch.autograd.grad(per.sum(), x)
    assert (grad[~valid] == 0).all() and (grad[valid] != 0).all()
    pen = HierarchyPenalty(dag, reduction="none")(x)
    torch.testing.assert_close(HBCELoss(dag, ignore_index=-1, reduction="none")(x, y)[2], pen[2])


def test_penalty_term_ignores_targets(dag: Hierarchy) -> None:
    """Changing the targets changes the loss by the BCE difference only: the penalty depends on predictions."""
    torch.manual_seed(7)
    x = torch.randn(6, 6)
    y0, y1 = (torch.rand(6, 6) < 0.5).float(), (torch.rand(6, 6) < 0.5).float()
    crit = HBCELoss(dag, scale=3.0, reduction="none")
    torch.testing.assert_close(crit(x, y1) - crit(x, y0),
                               F.binary_cross_entropy_with_logits(x, y1, reduction="none").mean(1)
                               - F.binary_cross_entropy_with_logits(x, y0, reduction="none").mean(1))


def test_integer_targets_and_ignore_index(dag: Hierarchy) -> None:
    """Integer targets (no NaN possible) work, and -1 entries are ignored when ignore_index=-1."""
    x = torch.randn(4, 6)
    y = torch.randint(0, 2, (4, 6))
    y[0, 0] = -1
    got = HBCELoss(dag, scale=0.0, ignore_index=-1)(x, y)
    yf = y.float()
    yf[0, 0] = float("nan")
    torch.testing.assert_close(got, HBCELoss(dag, scale=0.0)(x, yf))


# ---------------------------------------------------------------- training
def _synthetic_tree(seed: int) -> tuple[Hierarchy, torch.Tensor, torch.Tensor]:
    """Three parents with two children each; leaves are noisy linear functions of 10 features, ancestor-closed."""
    gen = torch.Generator().manual_seed(seed)
    h = Hierarchy.from_edges([(f"p{i}", f"p{i}.{k}") for i in range(3) for k in range(2)])
    x = torch.randn(800, 10, generator=gen)
    w = torch.randn(10, h.num_labels, generator=gen)
    leaves = torch.tensor([lab in h.leaves for lab in h.labels])
    y = ((x @ w + 0.5 * torch.randn(800, h.num_labels, generator=gen)) > 0.8).to(torch.uint8) * leaves
    return h, x, torch.from_numpy(h.propagate(y.numpy())).float()


@pytest.mark.parametrize("seed", [0, 1])
def test_training_default_mode_reduces_incoherence(seed: int) -> None:
    """A short run: the default HBCELoss cuts the any-threshold violation rate well below BCE's; hard does not."""
    h, x, y = _synthetic_tree(seed)
    rates = {}
    for name, crit in (("bce", HBCELoss(h, scale=0.0)), ("hard", HBCELoss(h, mode="hard")),
                       ("default", HBCELoss(h))):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                    torch.nn.Linear(64, h.num_labels))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(40):
            model.train()
            for idx in torch.randperm(len(x), generator=gen).split(32):
                opt.zero_grad()
                crit(model(x[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(x))
        ei = h.edge_index
        rates[name] = (p[:, ei[1]] > p[:, ei[0]]).any(1).float().mean().item()
    assert rates["hard"] == rates["bce"]  # zero gradient: the very same model
    assert rates["bce"] > 0.5
    assert rates["default"] < 0.7 * rates["bce"]


# ---------------------------------------------------------------- state follows the hierarchy
def test_state_dict_of_another_hierarchy_is_refused(dag: Hierarchy) -> None:
    """Loading the state dict of a loss over another hierarchy with as many edges raises an error naming the first
    differing edge, and loads nothing: the loss keeps computing over its own edges (gradcheck passes). Penalties
    saved over the same hierarchy load freely."""
    other = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d", "e"], "c": ["d"], "iso": []})
    assert other.num_edges == dag.num_edges and other.labels == dag.labels
    crit = HBCELoss(dag, mode="hinge", reduction="none")
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    with pytest.raises(RuntimeError, match=re.escape(
            "edge_index: the state dict was saved for another hierarchy (its edge 3 joins label indices (1, 4); this "
            "hierarchy's edge 3 is ('c', 'd') = (2, 3)); build the HBCELoss from the hierarchy it was saved with")):
        crit.load_state_dict(HBCELoss(other, edge_weight=[9.0] * 5).state_dict())
    for key, value in crit.state_dict().items():
        torch.testing.assert_close(value, before[key])
    with pytest.raises(RuntimeError, match=r"it has 1 edges, this hierarchy has 5"):
        crit.load_state_dict(HBCELoss(Hierarchy.from_edges([("a", "b")])).state_dict())
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(3, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: crit.double()(z, y), (x,))
    crit.load_state_dict(HBCELoss(dag, mode="hinge", edge_weight=[1, 2, 3, 4, 5]).state_dict())
    torch.testing.assert_close(crit.edge_weight, torch.tensor([1.0, 2, 3, 4, 5], dtype=torch.float64))


def test_repr_shows_the_edge_reduction_in_effect(dag: Hierarchy) -> None:
    """``repr`` shows the edge reduction in effect, not the ``None`` that selected it."""
    assert "edge_reduction='mean'" in repr(HBCELoss(dag))
    assert "edge_reduction='sum'" in repr(HBCELoss(dag, mode="hard"))


def test_settings_survive_pickle_copy_and_moves(dag: Hierarchy) -> None:
    """The hyper-parameters read back as passed (``scale`` with the mode's default substituted), and a module's frozen
    settings and edge plan survive an assignment, pickling, deepcopy and a dtype move."""
    import copy

    crit = HBCELoss(dag, mode="hinge", edge_reduction=None, threshold=0.4)
    assert (crit.mode, crit.scale, crit.edge_reduction, crit.threshold, crit.reduction) == ("hinge", 1.0, None, 0.4,
                                                                                           "mean")
    crit.scale = 0.3
    x, y = torch.randn(5, 6), (torch.rand(5, 6) < 0.5).float()
    want = crit(x, y)
    for clone in (pickle.loads(pickle.dumps(crit)), copy.deepcopy(crit)):
        assert clone.scale == 0.3 and clone._settings == crit._settings
        torch.testing.assert_close(clone(x, y), want)
    moved = copy.deepcopy(crit).double()
    assert moved._plan.incidence is moved._incidence and moved._incidence.dtype == torch.float64
    torch.testing.assert_close(moved(x.double(), y.double()), want.double(), rtol=1e-5, atol=1e-6)
