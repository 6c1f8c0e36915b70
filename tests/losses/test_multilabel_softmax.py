"""Tests for hierloss.losses.multilabel_softmax: a naive softmax loop, edge cases, gradients and masking, and the fused
kernel against the reference formula."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from hierloss import Hierarchy, HierarchyPenalty, MultiLabelSoftmaxLoss
from hierloss.functional import multilabel_softmax_loss
from hierloss.losses._elementwise import multilabel_softmax_kernel
from hierloss.losses.multilabel_softmax import _reference_terms
from tests.losses._fused import fused_and_reference_of


def naive_msml(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample MSML: −mean over positives i of log(e^x_i / (e^x_i + Σ_neg e^x_j)), Python loops (float64)."""
    out = torch.zeros(logits.shape[0], dtype=torch.float64)
    for n in range(logits.shape[0]):
        keep = [c for c in range(logits.shape[1]) if valid is None or bool(valid[n, c])]
        pos = [float(logits[n, c]) for c in keep if float(target[n, c]) == 1]
        neg = [float(logits[n, c]) for c in keep if float(target[n, c]) == 0]
        terms = [-math.log(math.exp(p) / (math.exp(p) + sum(math.exp(q) for q in neg))) for p in pos]
        out[n] = sum(terms) / len(terms) if terms else 0.0
    return out


def test_matches_naive_formula() -> None:
    """Per-sample losses equal the loop, including samples without positives or without negatives."""
    torch.manual_seed(0)
    logits = 3 * torch.randn(9, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (9, 6)).double()
    y[0], y[1] = 0, 1
    ref = naive_msml(logits, y)
    assert ref[0] == 0 and ref[1] == 0
    torch.testing.assert_close(multilabel_softmax_loss(logits, y, "none"), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(MultiLabelSoftmaxLoss()(logits, y), ref.mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(MultiLabelSoftmaxLoss("sum")(logits, y), ref.sum(), rtol=1e-12, atol=1e-12)


def test_single_positive_is_cross_entropy() -> None:
    """With one positive per sample, MSML is PyTorch's softmax cross-entropy over all labels."""
    logits = torch.randn(7, 5, dtype=torch.float64)
    classes = torch.randint(0, 5, (7,))
    target = F.one_hot(classes, 5).double()
    torch.testing.assert_close(MultiLabelSoftmaxLoss()(logits, target), F.cross_entropy(logits, classes))


def test_ignore_index_and_nan() -> None:
    """Ignored and NaN targets belong to neither set."""
    torch.manual_seed(1)
    logits = torch.randn(10, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (10, 5)).double()
    mask = torch.rand(10, 5) < 0.3
    ref = naive_msml(logits, y, valid=~mask)
    torch.testing.assert_close(multilabel_softmax_loss(logits, torch.where(mask, -1.0, y), "none", -1), ref)
    torch.testing.assert_close(multilabel_softmax_loss(logits, torch.where(mask, float("nan"), y), "none"), ref)


def test_extreme_logits_finite() -> None:
    """±100 logits give finite losses and gradients (a wrong ranking costs about the logit gap)."""
    logits = torch.tensor([[-100.0, 100.0, 100.0], [100.0, -100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    loss = MultiLabelSoftmaxLoss(reduction="none")(logits, y)
    loss.sum().backward()
    torch.testing.assert_close(loss, torch.tensor([200.0 + math.log(2), 0.0]))
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_no_nan_gradient_without_negatives() -> None:
    """A sample whose labels are all positive (or all masked) contributes 0 with a zero, finite gradient."""
    logits = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    loss = multilabel_softmax_loss(logits, y, "sum", ignore_index=-1)
    loss.backward()
    assert loss == 0
    assert logits.grad is not None and bool((logits.grad == 0).all())


def test_fp16_inputs() -> None:
    """fp16 logits are computed in float32 and match float64."""
    logits = (5 * torch.randn(16, 8)).half()
    y = torch.randint(0, 2, (16, 8)).half()
    out = MultiLabelSoftmaxLoss(reduction="none")(logits, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), naive_msml(logits.double(), y.double()), rtol=1e-5, atol=1e-5)


def test_gradcheck() -> None:
    """float64 gradcheck with masking."""
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(-1, 2, (5, 4)).double()
    assert torch.autograd.gradcheck(lambda x: multilabel_softmax_loss(x, y, ignore_index=-1), (logits,))


def test_compile_fullgraph() -> None:
    """MultiLabelSoftmaxLoss compiles with fullgraph=True and matches eager."""
    criterion = MultiLabelSoftmaxLoss(ignore_index=-1)
    logits, y = torch.randn(8, 5), torch.randint(-1, 2, (8, 5)).float()
    compiled = torch.compile(criterion, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(logits, y), criterion(logits, y))


def test_composes_with_hierarchy_penalty() -> None:
    """MultiLabelSoftmaxLoss plus HierarchyPenalty is a scalar whose backward works."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    logits = torch.randn(6, 3, requires_grad=True)
    loss = MultiLabelSoftmaxLoss()(logits, torch.randint(0, 2, (6, 3))) + HierarchyPenalty(h)(logits)
    loss.backward()
    assert loss.ndim == 0 and logits.grad is not None


def test_errors() -> None:
    """Bad arguments and shapes raise errors that name them."""
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'max'"):
        MultiLabelSoftmaxLoss(reduction="max")
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, C\), got \(2, 2, 2\)"):
        multilabel_softmax_loss(torch.randn(2, 2, 2), torch.zeros(2, 2, 2))


# The fused kernel (hierloss.losses._elementwise) against the reference formula it replaces.

def fused_and_reference(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None, shift: bool | None,
                        host: bool | None = None) -> tuple[torch.Tensor, ...]:
    """Per-sample terms and the gradient of their sum, by the fused kernel and by autograd on the reference."""
    kernel = functools.partial(multilabel_softmax_kernel, zero_one=valid is None, shift=shift)
    reference = functools.partial(_reference_terms, y=y, valid=valid)
    return fused_and_reference_of(kernel, reference, x, y, valid, per_sample=True, host=host)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("shift", "host"), [(None, None), (True, None), (None, False)])
def test_fused_kernel_equals_reference(masked: bool, shift: bool | None, host: bool | None) -> None:
    """With and without the negatives' shift, the kernel's terms and gradient equal autograd on the reference
    (float64; rows without positives or without negatives included), masked entries left out."""
    torch.manual_seed(12)
    x = 2 * torch.randn(25, 18, dtype=torch.float64)
    y = torch.randint(0, 2, (25, 18)).double()
    y[0], y[1] = 0.0, 1.0
    valid = torch.rand(25, 18) > 0.25 if masked else None
    fused, ref, g_fused, g_ref = fused_and_reference(x, y if valid is None else y * valid, valid, shift, host)
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-8, atol=1e-12)  # softplus' z > 20 cut-off in the reference
    assert bool(torch.isfinite(g_fused).all())


def test_fused_kernel_extreme_logits_take_the_shifted_path() -> None:
    """Logits of ±200 (beyond the unshifted sum's safe range) are shifted and match the float64 loop."""
    x = torch.tensor([[200.0, -200.0, 3.0, 0.5], [-200.0, 200.0, -2.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    fused, _, g_fused, g_ref = fused_and_reference(x, y, None, None)
    torch.testing.assert_close(fused, naive_msml(x, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-8, atol=1e-12)


def test_double_backward() -> None:
    """Second derivatives through the fused path (create_graph=True differentiates the reference) pass
    gradgradcheck."""
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (4, 5)).double()
    y[:, 0], y[:, 1] = 1.0, 0.0
    assert torch.autograd.gradgradcheck(lambda x: multilabel_softmax_loss(x, y), (logits,))
