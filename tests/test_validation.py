"""Tests for hierloss._validation and the ``validate_args`` switch of every loss: impossible targets, probabilities
and ``pos_weight`` are refused with the offending column and value named; ``validate_args=False`` checks nothing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from hierloss import (
    AsymmetricLoss,
    FocalLoss,
    HBCELoss,
    Hierarchy,
    HierarchyPenalty,
    MCLoss,
    MultiLabelSoftmaxLoss,
    ZLPRLoss,
)
from hierloss._validation import (
    as_pos_weight,
    check_pos_weight,
    check_probabilities,
    check_target,
    check_unique_columns,
    pos_weight_constant,
    target_is_clean,
    values_readable,
)
from hierloss.functional import hbce_loss, hierarchy_penalty

H = Hierarchy.from_dict({"Abnormal": ["Opacity", "Cardiac"], "Opacity": ["Edema"]})  # 4 labels

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "hbce": lambda **kw: HBCELoss(H, **kw),
    "hbce-hard": lambda **kw: HBCELoss(H, mode="hard", **kw),
    "asl": AsymmetricLoss,
    "focal": FocalLoss,
    "zlpr": ZLPRLoss,
    "msml": MultiLabelSoftmaxLoss,
    "mcloss": lambda **kw: MCLoss(H, **kw),
}
#: Losses whose module knows the label names (their errors name the label, not only the column).
NAMED = {"hbce", "hbce-hard", "mcloss"}


def _targets(value: float) -> Tensor:
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    y[1, 2] = value
    return y


@pytest.mark.parametrize("name", list(LOSSES))
def test_target_outside_unit_interval_is_refused(name: str) -> None:
    """A target of 2 (e.g. a count) is refused naming its column and value, where ASL would give a negative loss."""
    x = torch.randn(3, 4)
    where = r"column 2 \('Cardiac'\)" if name in NAMED else "column 2"
    with pytest.raises(ValueError, match=rf"Expected `target` values in \[0, 1\] or NaN, but {where} holds 2\.0 "
                                         r"\(1 such value\)$"):
        LOSSES[name]()(x, _targets(2.0))


@pytest.mark.parametrize("name", list(LOSSES))
def test_uncertain_minus_one_needs_ignore_index(name: str) -> None:
    """CheXpert's -1 is refused with the ignore_index hint, and accepted (left out) with ignore_index=-1."""
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"holds -1\.0 \(1 such value\); pass ignore_index=-1 to leave uncertain "
                                         r"labels out"):
        LOSSES[name]()(x, _targets(-1.0))
    assert torch.isfinite(LOSSES[name](ignore_index=-1)(x, _targets(-1.0)))
    with pytest.raises(ValueError, match=r"values in \[0, 1\] or NaN or ignore_index=-1, but column"):
        LOSSES[name](ignore_index=-1)(x, _targets(-2.0))


@pytest.mark.parametrize("name", list(LOSSES))
def test_valid_targets_pass_and_validation_can_be_switched_off(name: str) -> None:
    """NaN (missing), soft and integer targets pass; with validate_args=False nothing is checked and the loss is
    computed as the formula says, even on an impossible target."""
    x = torch.randn(3, 4)
    for y in (_targets(float("nan")), _targets(0.3), _targets(1.0).long(), _targets(1.0).bool()):
        assert torch.isfinite(LOSSES[name]()(x, y))
    LOSSES[name](validate_args=False)(x, _targets(2.0))  # no error


def test_asymmetric_loss_counterexample_is_caught() -> None:
    """The reported counterexample: ASL on targets of 2 gives a negative loss unless validation refuses it."""
    x = torch.linspace(-4, 4, 32).reshape(8, 4)
    y = torch.full((8, 4), 2.0)
    assert AsymmetricLoss(validate_args=False)(x, y) < 0
    with pytest.raises(ValueError, match=r"holds 2\.0 \(32 such values\)"):
        AsymmetricLoss()(x, y)


def test_probabilities_are_checked_with_from_logits_false() -> None:
    """Raw logits given as probabilities are refused (as torch's binary_cross_entropy does), naming the label."""
    logits = torch.tensor([[0.2, 0.4, 1.7, 0.1]])
    y = torch.zeros(1, 4)
    with pytest.raises(ValueError, match=r"Expected probabilities in \[0, 1\] with from_logits=False, but `input` "
                                         r"column 2 \('Cardiac'\) holds 1\.7[0-9]* \(1 such value\); pass logits"):
        HBCELoss(H, mode="hard", from_logits=False)(logits, y)
    with pytest.raises(ValueError, match=r"column 2 \('Cardiac'\) holds 1\.7"):
        HierarchyPenalty(H, from_logits=False)(logits)
    with pytest.raises(ValueError, match=r"`input` column 2 \('Cardiac'\) holds 1\.7"):
        hierarchy_penalty(logits, H, from_logits=False)
    with pytest.raises(ValueError, match=r"column 0 \('Abnormal'\) holds nan"):
        HBCELoss(H, from_logits=False)(torch.tensor([[float("nan"), 0.5, 0.5, 0.5]]), y)
    assert torch.isfinite(HBCELoss(H, mode="hard", from_logits=False, validate_args=False)(logits, y))  # not refused


def test_pos_weight_must_be_finite_and_non_negative() -> None:
    """A negative or NaN pos_weight is refused when the loss is built (always) and by the functional form."""
    with pytest.raises(ValueError, match=r"`pos_weight` must be finite and >= 0, but label 'Opacity' is -1\.0"):
        HBCELoss(H, pos_weight=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"but label 'Edema' is nan"):
        HBCELoss(H, pos_weight=torch.tensor([1.0, 1.0, 1.0, float("nan")]), validate_args=False)
    x, y = torch.randn(2, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"`pos_weight` must be finite and >= 0, but label 'Abnormal' is inf"):
        hbce_loss(x, y, H, pos_weight=torch.tensor([float("inf"), 1.0, 1.0, 1.0]))


def test_validation_is_skipped_under_compile() -> None:
    """torch.compile(fullgraph=True) traces a loss with validate_args=True: the checks, which read values back,
    are skipped while tracing."""
    torch._dynamo.reset()
    compiled = torch.compile(AsymmetricLoss(), fullgraph=True, backend="aot_eager")
    assert torch.isfinite(compiled(torch.randn(4, 4), torch.rand(4, 4)))


def test_check_helpers_directly() -> None:
    """The helpers accept the boundary values and empty tensors, and count every offender."""
    check_target(torch.tensor([[0.0, 1.0, float("nan")]]))
    check_target(torch.zeros(0, 3))
    check_target(torch.tensor([[0, 1, 1]], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"column 1 holds 3\.0 \(2 such values\)"):
        check_target(torch.tensor([[0.0, 3.0], [0.0, 3.0]]))
    with pytest.raises(ValueError, match=r"column 0 holds 5\.0"):
        check_target(torch.tensor([[5, 0]]))
    check_probabilities(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"column 1 holds -0\.5"):
        check_probabilities(torch.tensor([[0.0, -0.5]]))
    check_pos_weight(torch.tensor([0.0, 3.0]))


def test_as_pos_weight_converts_what_users_pass() -> None:
    """``as_pos_weight`` turns numbers, sequences, NumPy arrays and 0-d / 1-d tensors into a (C,) tensor (a number is
    the same weight for every label), on the device and in the dtype of ``like``; a floating (C,) tensor passes as
    it is, its gradient kept."""
    labels = ("a", "b", "c")
    want = torch.tensor([1.0, 2.0, 3.0])
    for value in ([1, 2, 3], (1.0, 2.0, 3.0), np.array([1.0, 2.0, 3.0]), np.array([1, 2, 3]), want.long()):
        got = as_pos_weight(value, labels)
        assert got is not None and got.dtype == torch.float32
        torch.testing.assert_close(got, want)
    for value in (2, 2.0, np.float32(2.0), np.int64(2), torch.tensor(2.0)):
        got = as_pos_weight(value, labels)
        assert got is not None and got.shape == (3,)
        torch.testing.assert_close(got, torch.full((3,), 2.0))
    like = torch.zeros(2, 3, dtype=torch.float64)
    got = as_pos_weight([1, 2, 3], labels, like)
    assert got is not None and got.dtype == torch.float64
    learnable = torch.ones(3, requires_grad=True)
    assert as_pos_weight(learnable, labels) is learnable
    assert as_pos_weight(None, labels) is None


def test_as_pos_weight_errors_say_what_to_pass() -> None:
    """Booleans, strings, mappings, non-numbers and a wrong length are refused, naming what to pass."""
    labels = ("a", "b", "c")
    kinds = r"pos_weight must be a number \(the same weight for every label\), a sequence or NumPy array of C numbers"
    for bad, name in ((True, "bool"), (np.bool_(False), "bool"), ("1", "str"), ({"a": 1.0}, "dict")):
        with pytest.raises(TypeError, match=rf"{kinds}, or a 0-d or \(C,\) tensor; got {name}$"):
            as_pos_weight(bad, labels)
    with pytest.raises(TypeError, match=rf"{kinds}.*; could not read a list as numbers"):
        as_pos_weight([object()] * 3, labels)
    with pytest.raises(ValueError, match=r"Expected `pos_weight` of shape \(3,\), got \(2, 3\)"):
        as_pos_weight(np.ones((2, 3)), labels)
    with pytest.raises(ValueError, match=r"Expected `pos_weight` of shape \(3,\), got \(4,\)"):
        pos_weight_constant([1.0] * 4, labels)
    weight = pos_weight_constant(2.0, labels)
    assert weight is not None and weight.is_contiguous() and weight.tolist() == [2.0] * 3


def test_target_is_clean_says_when_nothing_needs_a_mask() -> None:
    """``target_is_clean`` is ``check_target`` that also says whether nothing needs masking: True for values in
    [0, 1], False with a NaN, an ignore_index entry, an ignore_index that could be a valid value, or an empty
    target; impossible values still raise."""
    y = torch.tensor([[0.0, 1.0, 0.3]])
    assert target_is_clean(y) and target_is_clean(y, ignore_index=-1)
    assert not target_is_clean(y, ignore_index=0)  # 0 might be ignored: it is a valid value
    assert target_is_clean(torch.tensor([[True, False]])) and target_is_clean(torch.tensor([[0, 1]]))
    assert not target_is_clean(torch.tensor([[0.0, float("nan")]]))
    assert not target_is_clean(torch.tensor([[0.0, -1.0]]), ignore_index=-1)
    assert not target_is_clean(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"column 1 holds 2\.0"):
        target_is_clean(torch.tensor([[0.0, 2.0]]))
    target = torch.tensor([[0.5, 1.0]], requires_grad=True)
    assert target_is_clean(target) and target.grad_fn is None  # no graph is built for the check


def test_value_checks_skip_tensors_batched_by_vmap() -> None:
    """Under ``torch.func.vmap`` a batched tensor's values cannot be read: ``values_readable`` says so and the checks
    skip it, while a tensor closed over by the vmapped function is still checked."""
    assert values_readable(torch.zeros(3))
    seen: list[bool] = []

    def probe(row: Tensor) -> Tensor:
        seen.append(values_readable(row))
        check_target(row[None] * 5)  # out of range, but batched: not read
        check_probabilities(row[None] + 2)
        check_pos_weight(-row)
        return row.sum()

    torch.func.vmap(probe)(torch.ones(4, 3))
    torch.func.vmap(torch.func.grad(probe))(torch.ones(4, 3))
    assert seen == [False, False]
    with pytest.raises(ValueError, match=r"column 0 holds 5\.0"):
        torch.func.vmap(lambda row: (check_target(torch.full((1, 2), 5.0)), row.sum())[1])(torch.ones(4, 3))
    torch.func.grad(lambda z: (seen.append(values_readable(z)), z.sum())[1])(torch.ones(3))
    assert seen[-1]  # grad alone wraps, but values stay readable


def test_check_unique_columns_names_the_repeated_label_columns_only() -> None:
    """Repeated label columns are named with their count; repeated non-label columns are left alone."""
    check_unique_columns(pd.Index(["a", "b", "id", "id"]), ["a", "b"], "frame", "x needs")
    with pytest.raises(ValueError, match=r"^frame has the label column 'b' 3 times; x needs each label column once$"):
        check_unique_columns(pd.Index(["a", "b", "b", "b"]), ["a", "b"], "frame", "x needs")
    with pytest.raises(ValueError, match=r"^frame has the label columns \['a', 'b'\] more than once; x needs each "):
        check_unique_columns(pd.Index(["b", "a", "b", "a"]), ["a", "b"], "frame", "x needs")
