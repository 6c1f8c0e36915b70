"""Tests for hierloss.losses.focal: PyTorch's BCE in the degenerate case, a naive loop, gradients and masking, and
the fused kernel against the reference formula."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from hierloss import FocalLoss, Hierarchy, HierarchyPenalty
from hierloss.functional import focal_loss
from hierloss.losses._elementwise import focal_kernel
from hierloss.losses.focal import _reference_terms
from tests.losses._fused import fused_and_reference_of


def naive_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float | None, gamma: float) -> torch.Tensor:
    """Element-wise sigmoid focal loss from Lin et al.'s formula, Python loops and math (float64)."""
    out = torch.zeros(logits.shape, dtype=torch.float64)
    for n in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            x, y = float(logits[n, c]), float(target[n, c])
            p = 1 / (1 + math.exp(-x))
            p_t = p if y == 1 else 1 - p
            a_t = 1.0 if alpha is None else (alpha if y == 1 else 1 - alpha)
            out[n, c] = -a_t * (1 - p_t) ** gamma * math.log(p_t)
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gamma_zero_alpha_none_equals_bce_with_logits(reduction: str) -> None:
    """With gamma=0 and alpha=None the loss is F.binary_cross_entropy_with_logits exactly, soft targets included."""
    logits = 5 * torch.randn(12, 7)
    target = torch.rand(12, 7)
    ours = FocalLoss(alpha=None, gamma=0.0, reduction=reduction)(logits, target)
    assert torch.equal(ours, F.binary_cross_entropy_with_logits(logits, target, reduction=reduction))


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (None, 2.0), (0.5, 0.5), (0.9, 0.0), (None, 3.0)])
def test_matches_naive_formula(alpha: float | None, gamma: float) -> None:
    """Element-wise losses equal a float64 loop over the formula; mean is sum / (N·C)."""
    torch.manual_seed(0)
    logits = 3 * torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (6, 5)).double()
    ref = naive_focal(logits, y, alpha, gamma)
    torch.testing.assert_close(focal_loss(logits, y, alpha, gamma, "none"), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(FocalLoss(alpha, gamma)(logits, y), ref.mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(FocalLoss(alpha, gamma, reduction="sum")(logits, y), ref.sum(), rtol=1e-10,
                               atol=1e-12)


def test_alpha_weighting_with_gamma_zero_is_weighted_bce() -> None:
    """gamma=0 with alpha gives BCE weighted by alpha for positives and 1 − alpha for negatives."""
    logits, y = torch.randn(8, 4), torch.randint(0, 2, (8, 4)).float()
    weight = 0.3 * y + 0.7 * (1 - y)
    torch.testing.assert_close(FocalLoss(alpha=0.3, gamma=0.0)(logits, y),
                               F.binary_cross_entropy_with_logits(logits, y, weight=weight))


def test_ignore_index_and_nan() -> None:
    """Ignored and NaN targets are 0 in 'none' and 'mean' divides by the number of valid elements."""
    torch.manual_seed(1)
    logits = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (10, 4)).double()
    mask = torch.rand(10, 4) < 0.3
    ref = naive_focal(logits, y, 0.25, 2.0)
    for target, ignore in ((torch.where(mask, -1.0, y), -1), (torch.where(mask, float("nan"), y), None)):
        torch.testing.assert_close(focal_loss(logits, target, reduction="none", ignore_index=ignore),
                                   torch.where(mask, 0.0, ref), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(focal_loss(logits, target, ignore_index=ignore), ref[~mask].mean(),
                                   rtol=1e-10, atol=1e-12)


def test_extreme_logits_finite() -> None:
    """±100 logits give finite losses and gradients; a confident wrong answer costs about |x| · alpha_t."""
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss = FocalLoss(reduction="none")(logits, y)
    loss.sum().backward()
    assert bool(torch.isfinite(loss).all())
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    torch.testing.assert_close(loss[0, 1], torch.tensor(25.0))  # 0.25 · 1² · 100
    torch.testing.assert_close(loss[0, 2], torch.tensor(75.0))  # 0.75 · 1² · 100


def test_fp16_inputs() -> None:
    """fp16 logits are computed in float32 and match the float64 result on the same values."""
    logits = (3 * torch.randn(16, 8)).half()
    y = torch.randint(0, 2, (16, 8)).half()
    out = FocalLoss()(logits, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), FocalLoss()(logits.double(), y.double()), rtol=1e-5, atol=1e-7)


def test_gradcheck() -> None:
    """float64 gradcheck for a few (alpha, gamma)."""
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (5, 4)).double()
    for alpha, gamma in ((0.25, 2.0), (None, 0.0), (0.5, 1.5)):
        assert torch.autograd.gradcheck(lambda x, a=alpha, g=gamma: focal_loss(x, y, a, g), (logits,))


def test_compile_fullgraph() -> None:
    """FocalLoss compiles with fullgraph=True and matches eager."""
    criterion = FocalLoss(ignore_index=-1)
    logits, y = torch.randn(8, 5), torch.randint(-1, 2, (8, 5)).float()
    compiled = torch.compile(criterion, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(logits, y), criterion(logits, y))


def test_composes_with_hierarchy_penalty() -> None:
    """FocalLoss plus HierarchyPenalty is a scalar whose backward works."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    logits = torch.randn(6, 3, requires_grad=True)
    loss = FocalLoss()(logits, torch.randint(0, 2, (6, 3)).float()) + HierarchyPenalty(h)(logits)
    loss.backward()
    assert loss.ndim == 0 and logits.grad is not None


def test_errors() -> None:
    """Bad arguments and shapes raise errors that name them."""
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\] or None, got 1.5"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="`gamma` must be a finite number >= 0, got -2"):
        FocalLoss(gamma=-2)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        focal_loss(torch.randn(2, 2), torch.zeros(2, 2), reduction="avg")
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(2, 2\) like `input`, got \(2,\)"):
        FocalLoss()(torch.randn(2, 2), torch.zeros(2))


# The fused kernel (hierloss.losses._elementwise) against the reference formula it replaces.

def fused_and_reference(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None, alpha: float | None,
                        gamma: float, host: bool | None = None) -> tuple[torch.Tensor, ...]:
    """Element-wise terms and the gradient of their sum, by the fused kernel and by autograd on the reference."""
    kernel = functools.partial(focal_kernel, alpha=alpha, gamma=gamma)
    reference = functools.partial(_reference_terms, y=y, valid=valid, alpha=alpha, gamma=gamma)
    return fused_and_reference_of(kernel, reference, x, y, valid, per_sample=False, host=host)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (None, 2.0), (0.5, 0.5), (0.9, 0.0), (None, 3.0),
                                              (0.25, 1.0)])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("host", [None, False])
def test_fused_kernel_equals_reference(alpha: float | None, gamma: float, soft: bool, host: bool | None) -> None:
    """The kernel's terms and gradient equal autograd on the reference to float64 rounding, hard or soft targets,
    with masked entries and ±100 logits, on the CPU's path and an accelerator's."""
    torch.manual_seed(8)
    x = 4 * torch.randn(30, 19, dtype=torch.float64)
    x[0, :2] = torch.tensor([100.0, -100.0])
    y = torch.rand(30, 19, dtype=torch.float64) if soft else torch.randint(0, 2, (30, 19)).double()
    valid = torch.rand(30, 19) > 0.2
    fused, ref, g_fused, g_ref = fused_and_reference(x, y * valid, valid, alpha, gamma, host)
    torch.testing.assert_close(fused, ref, rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-9, atol=1e-12)
    assert not bool(g_fused[~valid].any())


def test_fused_kernel_float32_gradient_within_rounding() -> None:
    """In float32 the kernel's gradient is as close to the float64 truth as autograd's on the reference."""
    torch.manual_seed(9)
    x = 3 * torch.randn(64, 33)
    y = torch.randint(0, 2, (64, 33)).float()
    _, _, g_fused, g_ref = fused_and_reference(x, y, None, 0.25, 2.0)
    _, _, g_true, _ = fused_and_reference(x.double(), y.double(), None, 0.25, 2.0)
    err_fused, err_ref = (g_fused.double() - g_true).abs().max(), (g_ref.double() - g_true).abs().max()
    assert err_fused <= 4 * err_ref + 1e-9


def test_double_backward() -> None:
    """Second derivatives through the fused path (create_graph=True differentiates the reference) pass
    gradgradcheck."""
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (4, 5)).double()
    assert torch.autograd.gradgradcheck(lambda x: focal_loss(x, y), (logits,))
