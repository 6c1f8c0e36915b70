"""Tests for hierloss._penalty_forms: each form's derivatives against autograd of its value, the violation test
shared with the metrics, and the per-sample reference sum."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierloss import Hierarchy
from hierloss._penalty_forms import FORMS, MODES, edge_penalty, penalty_space, violated
from hierloss.metrics import edge_violations

FLOATS = st.floats(-30, 30, allow_nan=False, width=64).map(lambda v: round(v, 6))  # no subnormal gaps


def points(space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Parent/child values over a grid in the form's space, ties (v_child == v_parent) included."""
    grid = torch.linspace(-6, 6, 25, dtype=torch.float64) if space == "logits" else torch.linspace(0.01, 0.99, 25,
                                                                                                  dtype=torch.float64)
    v_parent, v_child = torch.meshgrid(grid, grid, indexing="ij")
    return v_parent.reshape(-1), v_child.reshape(-1)


@pytest.mark.parametrize("mode", MODES)
def test_partials_equal_autograd_of_the_value(mode: str) -> None:
    """Each form's explicit derivatives (what the fused kernel's backward uses) equal autograd of its value (what
    the reference uses), on a grid that includes ties, where the hinges' derivative is 0 on both sides."""
    form = FORMS[mode]
    v_parent, v_child = (t.clone().requires_grad_() for t in points(form.space))
    value = form.value(v_parent, v_child, 0.5, 0.2)
    if not form.has_gradient:
        assert form.partials(v_parent, v_child, 0.5, 0.2) is None
        assert not value.requires_grad
        return
    d_parent, d_child = torch.autograd.grad(value.sum(), (v_parent, v_child))
    partials = form.partials(v_parent.detach(), v_child.detach(), 0.5, 0.2)
    assert partials is not None
    torch.testing.assert_close(partials[0], d_parent)
    torch.testing.assert_close(partials[1], d_child)
    ties = v_parent == v_child
    if form.is_difference:
        assert bool((partials[1][ties] == 0).all())


@pytest.mark.parametrize("mode", [m for m in MODES if FORMS[m].is_difference])
@settings(max_examples=60, deadline=None)
@given(parent=FLOATS, child=FLOATS)
def test_difference_forms_depend_on_the_clamped_gap_only(mode: str, parent: float, child: float) -> None:
    """A difference form is f(max(0, v_child − v_parent)) with f(0) = 0: zero unless the child exceeds the parent,
    and unchanged by a common shift of both values."""
    form = FORMS[mode]
    vp, vc = torch.tensor([parent], dtype=torch.float64), torch.tensor([child], dtype=torch.float64)
    value = form.value(vp, vc, 0.5, 0.1)
    assert form.gap is not None
    torch.testing.assert_close(value, form.gap(torch.relu(vc - vp)))
    assert (float(value) > 0) == (child > parent)
    torch.testing.assert_close(form.value(vp + 3.0, vc + 3.0, 0.5, 0.1), value)


@settings(max_examples=80, deadline=None)
@given(parent=st.floats(0, 1, width=64).map(lambda v: round(v, 6)), child=st.floats(0, 1, width=64).map(
    lambda v: round(v, 6)), threshold=st.floats(0.05, 0.95))  # rounded: no gap whose square underflows to 0
def test_violation_test_is_the_hard_form_and_the_hinges_support(parent: float, child: float,
                                                                 threshold: float) -> None:
    """``violated`` at a threshold is the 'hard' form's indicator; with no threshold it is where every difference
    form is positive."""
    vp, vc = torch.tensor([parent], dtype=torch.float64), torch.tensor([child], dtype=torch.float64)
    hard = FORMS["hard"].value(vp, vc, threshold, 0.1)
    assert bool(violated(vp, vc, threshold)) == bool(hard == 1) == (parent < threshold < child)
    for mode in MODES:
        if FORMS[mode].is_difference:
            assert bool(violated(vp, vc, None)) == bool(FORMS[mode].value(vp, vc, threshold, 0.1) > 0)


def test_metrics_read_the_same_violation_test() -> None:
    """``metrics.edge_violations`` flags exactly what ``violated`` flags, at a threshold and at any threshold."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    torch.manual_seed(0)
    probs = torch.rand(50, h.num_labels)
    ei = h.edge_index
    for threshold in (0.5, 0.3, None):
        want = violated(probs[:, ei[0]], probs[:, ei[1]], threshold)
        assert torch.equal(edge_violations(probs, h, threshold), want)


def test_edge_penalty_equals_a_loop() -> None:
    """The reference sum Σ_e w_e · penalty_e per sample equals a loop over samples and edges."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"]})
    torch.manual_seed(1)
    x = torch.randn(5, h.num_labels, dtype=torch.float64)
    w = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    for mode in MODES:
        form = FORMS[mode]
        v = penalty_space(x, form, from_logits=True)
        got = edge_penalty(v, h.edge_index, w, form, 0.5, 0.2)
        for n in range(5):
            want = sum(float(w[e]) * float(form.value(v[n, p], v[n, c], 0.5, 0.2))
                       for e, (p, c) in enumerate(h.edge_indices))
            assert got[n].item() == pytest.approx(want)


def test_table_defaults() -> None:
    """The defaults users see: the logit hinge trains with λ = 0.1 averaged over edges; 'hard' is the reference,
    summed over edges, without gradient; every other form trains."""
    assert MODES == ("logit_hinge", "hinge", "squared_hinge", "soft", "hard")
    assert FORMS["logit_hinge"].default_scale == 0.1 and FORMS["logit_hinge"].space == "logits"
    assert FORMS["hard"].default_edge_reduction == "sum" and not FORMS["hard"].has_gradient
    assert all(FORMS[m].has_gradient and FORMS[m].default_edge_reduction == "mean" for m in MODES if m != "hard")


@pytest.mark.parametrize("mode", [m for m in MODES if FORMS[m].is_difference])
def test_difference_forms_have_their_degree(mode: str) -> None:
    """Each difference form is positively homogeneous of its declared degree, ``f(a·h) = a**k · f(h)``, which lets
    the dense kernel fold a weight into the gap: ``w · f(h) = f(w**(1/k) · h)``."""
    form = FORMS[mode]
    assert form.gap is not None and form.degree is not None
    h = torch.linspace(0, 5, 11, dtype=torch.float64)
    for a in (0.0, 0.3, 1.0, 2.5):
        torch.testing.assert_close(form.gap(a * h), a ** form.degree * form.gap(h))
        torch.testing.assert_close(form.gap(a ** (1 / form.degree) * h), a * form.gap(h))


def test_a_form_is_either_kind() -> None:
    """A form gives gap (with its slope and degree) or pair, not both or neither."""
    from hierloss._penalty_forms import PenaltyForm

    with pytest.raises(ValueError, match="give either gap"):
        PenaltyForm("both", "logits", gap=torch.relu, slope=torch.sign, degree=1, pair=FORMS["soft"].pair)
    with pytest.raises(ValueError, match="give either gap"):
        PenaltyForm("neither", "logits")
    with pytest.raises(ValueError, match="difference form 'flat' needs its slope and its degree"):
        PenaltyForm("flat", "logits", gap=torch.relu, slope=torch.sign)
