"""Tests for hierloss.losses.zlpr: a naive formula loop, the temperature, fp16 safety, gradients and masking, and the
fused kernel against the reference formula."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from hierloss import Hierarchy, HierarchyPenalty, ZLPRLoss
from hierloss.functional import zlpr_loss
from hierloss.losses._elementwise import zlpr_kernel
from hierloss.losses.zlpr import _reference_terms, log1p_sum_exp
from tests.losses._fused import fused_and_reference_of


def naive_zlpr(logits: torch.Tensor, target: torch.Tensor, temperature: float,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample ZLPR from the formula: log(1 + Σ_neg e^s) + log(1 + Σ_pos e^−s), Python loops (float64)."""
    out = torch.zeros(logits.shape[0], dtype=torch.float64)
    for n in range(logits.shape[0]):
        neg, pos = 1.0, 1.0
        for c in range(logits.shape[1]):
            if valid is not None and not bool(valid[n, c]):
                continue
            s = float(logits[n, c]) / temperature
            if float(target[n, c]) == 1:
                pos += math.exp(-s)
            else:
                neg += math.exp(s)
        out[n] = math.log(neg) + math.log(pos)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_matches_naive_formula(temperature: float) -> None:
    """Per-sample losses equal a float64 loop over the formula, for every reduction."""
    torch.manual_seed(0)
    logits = 3 * torch.randn(9, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (9, 6)).double()
    y[0] = 0  # a sample without positives
    y[1] = 1  # a sample without negatives
    ref = naive_zlpr(logits, y, temperature)
    torch.testing.assert_close(zlpr_loss(logits, y, temperature, "none"), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ZLPRLoss(temperature)(logits, y), ref.mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ZLPRLoss(temperature, reduction="sum")(logits, y), ref.sum(), rtol=1e-12, atol=1e-12)


def test_decision_rule_is_zero() -> None:
    """The loss falls as positives rise above 0 and negatives fall below 0, and is below log 4 exactly then."""
    y = torch.tensor([[1.0, 0.0]])
    right = zlpr_loss(torch.tensor([[0.1, -0.1]]), y)
    wrong = zlpr_loss(torch.tensor([[-0.1, 0.1]]), y)
    assert right < math.log(4) < wrong  # log 4: both scores at exactly 0


def test_ignore_index_and_nan() -> None:
    """Ignored and NaN targets belong to neither set."""
    torch.manual_seed(1)
    logits = torch.randn(10, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (10, 5)).double()
    mask = torch.rand(10, 5) < 0.3
    ref = naive_zlpr(logits, y, 1.0, valid=~mask)
    torch.testing.assert_close(zlpr_loss(logits, torch.where(mask, -1.0, y), ignore_index=-1, reduction="none"), ref)
    torch.testing.assert_close(zlpr_loss(logits, torch.where(mask, float("nan"), y), reduction="none"), ref)


def test_extreme_logits_finite() -> None:
    """±100 logits (and ±100 / 0.1 after the temperature) give finite losses and gradients."""
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss = ZLPRLoss(temperature=0.1)(logits, y)
    loss.backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, torch.tensor(2000.0))  # log(1 + e^1000) + log(1 + e^1000) ≈ 2 · 1000
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_fp16_inputs_are_safe() -> None:
    """fp16 logits (no ±1e12 constants to overflow) are computed in float32 and match float64."""
    logits = (8 * torch.randn(16, 8)).half()
    y = torch.randint(0, 2, (16, 8)).half()
    y[0] = 0
    out = ZLPRLoss(reduction="none")(logits, y)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.double(), naive_zlpr(logits.double(), y.double(), 1.0), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(ZLPRLoss()(logits.float(), y))


def test_log1p_sum_exp_all_masked_has_zero_gradient() -> None:
    """A row of only −∞ gives 0 and a zero (not NaN) gradient to what was masked."""
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    masked = torch.where(torch.tensor([[False] * 3, [True, False, True]]), x, float("-inf"))
    out = log1p_sum_exp(masked)
    out.sum().backward()
    assert out[0] == 0
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and bool((x.grad[0] == 0).all())


def test_gradcheck() -> None:
    """float64 gradcheck with a temperature and masking."""
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(-1, 2, (5, 4)).double()
    assert torch.autograd.gradcheck(lambda x: zlpr_loss(x, y, 0.7, ignore_index=-1), (logits,))


def test_compile_fullgraph() -> None:
    """ZLPRLoss compiles with fullgraph=True and matches eager."""
    criterion = ZLPRLoss(temperature=0.5, ignore_index=-1)
    logits, y = torch.randn(8, 5), torch.randint(-1, 2, (8, 5)).float()
    compiled = torch.compile(criterion, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(logits, y), criterion(logits, y))


def test_composes_with_hierarchy_penalty() -> None:
    """ZLPRLoss plus HierarchyPenalty is a scalar whose backward works."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    logits = torch.randn(6, 3, requires_grad=True)
    loss = ZLPRLoss()(logits, torch.randint(0, 2, (6, 3))) + HierarchyPenalty(h)(logits)
    loss.backward()
    assert loss.ndim == 0 and logits.grad is not None


def test_errors() -> None:
    """Bad arguments and shapes raise errors that name them."""
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0, got 0"):
        ZLPRLoss(temperature=0)
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0, got -1\.0"):
        zlpr_loss(torch.randn(2, 2), torch.zeros(2, 2), temperature=-1.0)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        ZLPRLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(2, 2\) like `input`, got \(2, 3\)"):
        ZLPRLoss()(torch.randn(2, 2), torch.zeros(2, 3))


# The fused kernel (hierloss.losses._elementwise) against the reference formula it replaces.

def fused_and_reference(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None, temperature: float,
                        shift: bool | None, host: bool | None = None) -> tuple[torch.Tensor, ...]:
    """Per-sample terms and the gradient of their sum, by the fused kernel and by autograd on the reference."""
    kernel = functools.partial(zlpr_kernel, temperature=temperature, zero_one=valid is None, shift=shift)
    reference = functools.partial(_reference_terms, y=y, valid=valid, temperature=temperature)
    return fused_and_reference_of(kernel, reference, x, y, valid, per_sample=True, host=host)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("shift", "host"), [(None, None), (True, None), (None, False)])
def test_fused_kernel_equals_reference(temperature: float, masked: bool, shift: bool | None,
                                       host: bool | None) -> None:
    """With and without the per-set shift (the CPU's unshifted sums, an accelerator's shifted ones), the kernel's
    terms and gradient equal autograd on the reference (float64), masked entries left out."""
    torch.manual_seed(10)
    x = 3 * torch.randn(25, 18, dtype=torch.float64)
    y = torch.randint(0, 2, (25, 18)).double()
    valid = torch.rand(25, 18) > 0.25 if masked else None
    fused, ref, g_fused, g_ref = fused_and_reference(x, y if valid is None else y * valid, valid, temperature,
                                                     shift, host)
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-10, atol=1e-12)


def test_fused_kernel_extreme_logits_take_the_shifted_path() -> None:
    """Logits beyond the unshifted sums' safe range (|s| = 200) are shifted per set and match the float64 loop."""
    x = torch.tensor([[100.0, -100.0, 3.0, 0.5], [-100.0, 100.0, -2.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    fused, _, g_fused, g_ref = fused_and_reference(x, y, None, 0.5, None)
    torch.testing.assert_close(fused, naive_zlpr(x, y, 0.5), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-10, atol=1e-12)


def test_double_backward() -> None:
    """Second derivatives through the fused path (create_graph=True differentiates the reference) pass
    gradgradcheck."""
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (4, 5)).double()
    assert torch.autograd.gradgradcheck(lambda x: zlpr_loss(x, y, temperature=0.7), (logits,))
