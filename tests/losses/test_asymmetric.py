"""Tests for hierloss.losses.asymmetric: the original ASL class, a naive formula loop, gradients and masking, and the
fused kernel against the reference formula."""

from __future__ import annotations

import concurrent.futures
import functools
import math

import pytest
import torch
from torch import nn

from hierloss import AsymmetricLoss, Hierarchy, HierarchyPenalty
from hierloss.functional import asymmetric_loss
from hierloss.losses import _elementwise as elementwise
from hierloss.losses._elementwise import asymmetric_kernel
from hierloss.losses.asymmetric import _reference_terms
from tests.losses._fused import fused_and_reference_of


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


# The fused kernel (hierloss.losses._elementwise) against the reference formula it replaces.

def fused_and_reference(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None, *, zero_one: bool,
                        host: bool | None = None, **settings: float | bool) -> tuple[torch.Tensor, ...]:
    """Element-wise terms and the gradient of their sum, by the fused kernel and by autograd on the reference."""
    kernel = functools.partial(asymmetric_kernel, zero_one=zero_one, **settings)  # type: ignore[arg-type]
    reference = functools.partial(_reference_terms, y=y, valid=valid, **settings)  # type: ignore[arg-type]
    return fused_and_reference_of(kernel, reference, x, y, valid, per_sample=False, host=host)


FUSED_SETTINGS = [dict(gamma_neg=g, gamma_pos=p, clip=c, eps=e, detach_focusing_weight=d)
                  for (g, p, c, e), d in [(s, False) for s in SETTINGS] + [((4.0, 1.0, 0.05, 1e-8), True),
                                                                           ((1.5, 2.5, 0.2, 1e-8), False),
                                                                           ((0.0, 3.0, 0.05, 1e-8), False)]]


@pytest.mark.parametrize("settings", FUSED_SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("zero_one", "host"), [(True, None), (False, None), (False, False)])
def test_fused_kernel_equals_reference_bit_for_bit(settings: dict[str, float | bool], dtype: torch.dtype,
                                                    zero_one: bool, host: bool | None) -> None:
    """Both forms of the kernel (select for 0/1 targets, the authors' blend; on the CPU's path and an accelerator's)
    give the reference's terms bit for bit, ±100 logits included, and its gradient to rounding."""
    torch.manual_seed(4)
    x = 6 * torch.randn(40, 23, dtype=dtype)
    x[0, :4] = torch.tensor([100.0, -100.0, 30.0, -30.0])
    y = torch.randint(0, 2, (40, 23)).to(dtype)
    fused, ref, g_fused, g_ref = fused_and_reference(x, y, None, zero_one=zero_one, host=host, **settings)
    assert torch.equal(fused, ref)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(g_fused, g_ref, rtol=tol, atol=tol * float(g_ref.abs().max()))
    assert bool(torch.isfinite(g_fused).all())


@pytest.mark.parametrize("settings", FUSED_SETTINGS)
def test_fused_blend_form_soft_targets_and_masks(settings: dict[str, float | bool]) -> None:
    """Soft targets and masked entries: the blend form's terms equal the reference bit for bit, its gradient to
    rounding (float64), left-out entries 0 in both."""
    torch.manual_seed(5)
    x = 3 * torch.randn(30, 17, dtype=torch.float64)
    y = torch.rand(30, 17, dtype=torch.float64)
    valid = torch.rand(30, 17) > 0.3
    fused, ref, g_fused, g_ref = fused_and_reference(x, y * valid, valid, zero_one=False, **settings)
    assert torch.equal(fused, ref)
    assert not bool(fused[~valid].any()) and not bool(g_fused[~valid].any())
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-9, atol=1e-12)


def test_blocks_give_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swept in many small blocks (the last one short), the loss and its gradient are those of one block, bit for
    bit: blocks start at multiples of BLOCK_ALIGN, so every element takes the same code path."""
    torch.manual_seed(6)
    logits = (3 * torch.randn(37, 29)).requires_grad_()
    y = torch.randint(0, 2, (37, 29)).float()
    whole = asymmetric_loss(logits, y, reduction="sum")
    (g_whole,) = torch.autograd.grad(whole, logits)
    monkeypatch.setattr(elementwise, "BLOCK_BYTES", 4 * elementwise.BLOCK_ALIGN * 2)  # 128-element blocks
    blocks = asymmetric_loss(logits, y, reduction="sum")
    (g_blocks,) = torch.autograd.grad(blocks, logits)
    assert torch.equal(blocks, whole) and torch.equal(g_blocks, g_whole)
    assert torch.equal(whole, OriginalAsymmetricLoss()(logits, y))


def test_double_backward() -> None:
    """Second derivatives through the fused path (create_graph=True differentiates the reference) pass
    gradgradcheck."""
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (4, 5)).double()
    for gamma_neg, gamma_pos in ((4.0, 1.0), (2.0, 2.5)):
        assert torch.autograd.gradgradcheck(lambda x, a=gamma_neg, b=gamma_pos: asymmetric_loss(x, y, a, b),
                                            (logits,))


def test_scratch_memory_is_not_shared_with_results() -> None:
    """Results of one call ('none' terms, gradients) stay intact while later calls of other shapes reuse the
    per-thread scratch pool."""
    torch.manual_seed(7)
    logits = torch.randn(16, 9, requires_grad=True)
    y = torch.randint(0, 2, (16, 9)).float()
    first = AsymmetricLoss(reduction="none")(logits, y)
    first.sum().backward()
    kept, grad = first.detach().clone(), logits.grad.clone()
    for shape in ((16, 9), (5, 31), (64, 3)):
        AsymmetricLoss()(torch.randn(shape, requires_grad=True), torch.randint(0, 2, shape).float()).backward()
    assert torch.equal(first.detach(), kept) and torch.equal(logits.grad, grad)


def test_zero_one_shortcut_respects_ignore_index_zero() -> None:
    """ignore_index=0 leaves out the zeros of a 0/1 target (the 0/1 shortcut does not skip masking then)."""
    logits = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (6, 4)).double()
    terms = asymmetric_loss(logits, y, reduction="none", ignore_index=0)
    assert not bool(terms[y == 0].any())
    torch.testing.assert_close(terms[y == 1], asymmetric_loss(logits, y, reduction="none")[y == 1])


def test_target_requiring_grad_gets_its_gradient() -> None:
    """A target that requires grad (soft labels being learned) takes the reference path and receives the
    reference's gradient."""
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    soft = torch.rand(5, 4, dtype=torch.float64, requires_grad=True)
    g_logits, g_soft = torch.autograd.grad(asymmetric_loss(logits, soft), (logits, soft))
    ref = _reference_terms(logits, soft, None, 4.0, 1.0, 0.05, 1e-8, False).mean()
    r_logits, r_soft = torch.autograd.grad(ref, (logits, soft))
    torch.testing.assert_close(g_logits, r_logits, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_soft, r_soft, rtol=1e-12, atol=1e-14)


def test_inference_mode_then_training() -> None:
    """A first call under torch.inference_mode leaves the scratch pool usable by training calls (and back)."""
    logits, y = torch.randn(8, 5), torch.randint(0, 2, (8, 5)).float()
    with torch.inference_mode():
        before = AsymmetricLoss()(logits.clone(), y.clone())
    trained = logits.clone().requires_grad_()
    AsymmetricLoss()(trained, y).backward()
    with torch.inference_mode():
        after = AsymmetricLoss()(logits.clone(), y.clone())
    assert torch.equal(before, after) and trained.grad is not None


def test_python_threads_keep_their_own_scratch() -> None:
    """Losses computed at once in several Python threads equal those computed one after another."""
    torch.manual_seed(8)
    batches = [(3 * torch.randn(200, 21), torch.randint(0, 2, (200, 21)).float()) for _ in range(8)]
    expected = [asymmetric_loss(x, y, reduction="none") for x, y in batches]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda b: asymmetric_loss(b[0], b[1], reduction="none"), batches))
            assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_backward_twice_with_retain_graph() -> None:
    """A second backward through the same graph (retain_graph=True) gives the same gradient again."""
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (6, 5)).double()
    loss = AsymmetricLoss()(logits, y)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(second, first, rtol=1e-12, atol=1e-15)
