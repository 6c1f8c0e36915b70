"""Tests for hierloss.losses.asymmetric: the original ASL class, a naive formula loop, gradients and masking."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hierloss import AsymmetricLoss, Hierarchy, HierarchyPenalty
from hierloss.functional import asymmetric_loss


class OriginalAsymmetricLoss(nn.Module):
    """Re-implementation of Ridnik et al.'s ``AsymmetricLoss`` (Alibaba-MIIL/ASL, src/loss_functions/losses.py).

    Same operations in the same order, including the in-place ``loss *= w`` and, when
    ``disable_torch_grad_focal_loss`` is set, the global grad-mode toggling of the original's earlier versions.
    """

    def __init__(self, gamma_neg: float = 4, gamma_pos: float = 1, clip: float = 0.05, eps: float = 1e-8,
                 disable_torch_grad_focal_loss: bool = False) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.disable_torch_grad_focal_loss = disable_torch_grad_focal_loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_sigmoid = torch.sigmoid(x)
        xs_pos = x_sigmoid
        xs_neg = 1 - x_sigmoid
        if self.clip is not None and self.clip > 0:
            xs_neg = (xs_neg + self.clip).clamp(max=1)
        los_pos = y * torch.log(xs_pos.clamp(min=self.eps))
        los_neg = (1 - y) * torch.log(xs_neg.clamp(min=self.eps))
        loss = los_pos + los_neg
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            if self.disable_torch_grad_focal_loss:
                torch.set_grad_enabled(False)
            pt0 = xs_pos * y
            pt1 = xs_neg * (1 - y)
            pt = pt0 + pt1
            one_sided_gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
            one_sided_w = torch.pow(1 - pt, one_sided_gamma)
            if self.disable_torch_grad_focal_loss:
                torch.set_grad_enabled(True)
            loss *= one_sided_w
        return -loss.sum()


def naive_asl(logits: torch.Tensor, target: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float,
              eps: float) -> torch.Tensor:
    """Element-wise ASL from the paper's formula with Python loops and math (float64)."""
    out = torch.zeros(logits.shape, dtype=torch.float64)
    for n in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            p = 1 / (1 + math.exp(-float(logits[n, c])))
            y = float(target[n, c])
            p_m = max(p - clip, 0.0)
            out[n, c] = -(y * (1 - p) ** gamma_pos * math.log(max(p, eps))
                          + (1 - y) * p_m ** gamma_neg * math.log(max(1 - p_m, eps)))
    return out


SETTINGS = [(4.0, 1.0, 0.05, 1e-8), (4.0, 0.0, 0.05, 1e-8), (2.0, 2.0, 0.0, 1e-8), (0.0, 0.0, 0.1, 1e-5)]


@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip", "eps"), SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sum_equals_original_exactly(gamma_neg: float, gamma_pos: float, clip: float, eps: float,
                                     dtype: torch.dtype) -> None:
    """reduction='sum' returns the original's value bit for bit, and its gradient, for both detach settings."""
    torch.manual_seed(0)
    logits = (4 * torch.randn(32, 14, dtype=dtype)).requires_grad_()
    y = torch.randint(0, 2, (32, 14)).to(dtype)
    for detach in (False, True):
        ours = asymmetric_loss(logits, y, gamma_neg, gamma_pos, clip, eps, "sum", detach_focusing_weight=detach)
        original = OriginalAsymmetricLoss(gamma_neg, gamma_pos, clip, eps, disable_torch_grad_focal_loss=detach)
        ref = original(logits, y)
        assert torch.equal(ours, ref)
        g_ours, = torch.autograd.grad(ours, logits)
        g_ref, = torch.autograd.grad(ref, logits)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    assert torch.is_grad_enabled()


def test_detach_changes_gradient_not_value() -> None:
    """Detaching the focusing weight keeps the value and changes the gradient (so the option is not a no-op)."""
    torch.manual_seed(1)
    logits = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (16, 5)).double()
    full, detached = AsymmetricLoss()(logits, y), AsymmetricLoss(detach_focusing_weight=True)(logits, y)
    assert torch.equal(full, detached)
    g_full, = torch.autograd.grad(full, logits)
    g_det, = torch.autograd.grad(detached, logits)
    assert not torch.allclose(g_full, g_det)


@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip", "eps"), SETTINGS)
def test_matches_naive_formula(gamma_neg: float, gamma_pos: float, clip: float, eps: float) -> None:
    """The element-wise losses equal a float64 loop over the paper's formula; mean is sum / (N·C)."""
    torch.manual_seed(2)
    logits = 3 * torch.randn(7, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (7, 6)).double()
    ref = naive_asl(logits, y, gamma_neg, gamma_pos, clip, eps)
    torch.testing.assert_close(asymmetric_loss(logits, y, gamma_neg, gamma_pos, clip, eps, "none"), ref,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(AsymmetricLoss(gamma_neg, gamma_pos, clip, eps)(logits, y), ref.sum() / 42,
                               rtol=1e-10, atol=1e-12)


def test_ignore_index_and_nan() -> None:
    """Ignored and NaN targets are 0 in 'none', left out of 'sum', and 'mean' divides by the valid count."""
    torch.manual_seed(3)
    logits = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (10, 4)).double()
    mask = torch.rand(10, 4) < 0.3
    ref = naive_asl(logits, y, 4.0, 1.0, 0.05, 1e-8)
    for target, ignore in ((torch.where(mask, -1.0, y), -1), (torch.where(mask, float("nan"), y), None)):
        none = asymmetric_loss(target=target, input=logits, reduction="none", ignore_index=ignore)
        torch.testing.assert_close(none, torch.where(mask, 0.0, ref), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(asymmetric_loss(logits, target, reduction="sum", ignore_index=ignore),
                                   ref[~mask].sum(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(asymmetric_loss(logits, target, ignore_index=ignore), ref[~mask].mean(),
                                   rtol=1e-10, atol=1e-12)


def test_extreme_logits_finite() -> None:
    """±100 logits give finite losses and gradients for both targets."""
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss = AsymmetricLoss(reduction="none")(logits, y)
    loss.sum().backward()
    assert bool(torch.isfinite(loss).all())
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_fp16_inputs_and_autocast() -> None:
    """fp16 logits are computed in float32 and match the float64 result on the same values."""
    logits = (3 * torch.randn(16, 8)).half()
    y = torch.randint(0, 2, (16, 8)).half()
    out = AsymmetricLoss()(logits, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), AsymmetricLoss()(logits.double(), y.double()), rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert AsymmetricLoss()(logits.float(), y).dtype == torch.float32


def test_gradcheck() -> None:
    """float64 gradcheck of the full gradient (the detached one is checked against the original above)."""
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (5, 4)).double()
    for gamma_neg, gamma_pos, clip in ((4.0, 1.0, 0.05), (2.0, 0.0, 0.0), (1.5, 2.5, 0.2)):
        assert torch.autograd.gradcheck(lambda x, a=gamma_neg, b=gamma_pos, c=clip: asymmetric_loss(x, y, a, b, c),
                                        (logits,))


def test_compile_fullgraph() -> None:
    """AsymmetricLoss compiles with fullgraph=True (no graph break, no host sync) and matches eager."""
    criterion = AsymmetricLoss(ignore_index=-1)
    logits = torch.randn(8, 5)
    y = torch.randint(-1, 2, (8, 5)).float()
    compiled = torch.compile(criterion, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(logits, y), criterion(logits, y))


def test_composes_with_hierarchy_penalty() -> None:
    """AsymmetricLoss()(logits, y) + HierarchyPenalty(h, penalties)(logits) is a scalar that trains."""
    h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
    logits = torch.randn(8, 3, requires_grad=True)
    y = torch.randint(0, 2, (8, 3)).float()
    base = AsymmetricLoss()(logits, y)
    penalty = HierarchyPenalty(h, 1.0)(logits)
    loss = base + penalty
    loss.backward()
    assert loss.ndim == 0
    torch.testing.assert_close(loss, base + penalty)


def test_module_equals_function_and_repr() -> None:
    """The module's forward is the function with the same arguments."""
    logits, y = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    criterion = AsymmetricLoss(gamma_neg=2, gamma_pos=0, clip=0.1, reduction="sum")
    assert torch.equal(criterion(logits, y), asymmetric_loss(logits, y, 2, 0, 0.1, reduction="sum"))
    assert "gamma_neg=2.0" in repr(criterion)


def test_errors() -> None:
    """Bad arguments and shapes raise errors that name them."""
    with pytest.raises(ValueError, match="`gamma_neg` must be a finite number >= 0, got -1"):
        AsymmetricLoss(gamma_neg=-1)
    with pytest.raises(ValueError, match="`gamma_pos` must be a finite number >= 0, got nan"):
        AsymmetricLoss(gamma_pos=float("nan"))
    with pytest.raises(ValueError, match=r"`clip` must be in \[0, 1\), got 1.0"):
        AsymmetricLoss(clip=1.0)
    with pytest.raises(ValueError, match=r"`eps` must be in \(0, 1\), got 0"):
        AsymmetricLoss(eps=0)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'batchmean'"):
        AsymmetricLoss(reduction="batchmean")
    with pytest.raises(ValueError, match=r"Expected `target` of shape \(4, 3\) like `input`, got \(4, 2\)"):
        AsymmetricLoss()(torch.randn(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, C\), got \(3,\)"):
        asymmetric_loss(torch.randn(3), torch.zeros(3))
