"""The four label-wise losses (ASL, focal, ZLPR, multi-label softmax) under PyTorch's function transforms: module and
functional form under ``torch.func.grad``, ``torch.func.jvp``, forward-mode AD, ``torch.func.hessian`` and the
per-sample gradients of ``vmap(grad(...))`` that Opacus-style differential privacy needs, each against autograd
through the fused kernels (a Python loop of single-sample gradients for ``vmap``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor
from torch.func import grad, hessian, jvp, vmap

import hierloss
import hierloss.functional as HF

LossFn = Callable[..., Tensor]

# name -> (module class, functional twin, keyword arguments other than the defaults)
LOSSES: dict[str, tuple[type[torch.nn.Module], LossFn, dict[str, object]]] = {
    "asymmetric": (hierloss.AsymmetricLoss, HF.asymmetric_loss, {}),
    "asymmetric_gamma_pos_0": (hierloss.AsymmetricLoss, HF.asymmetric_loss, {"gamma_pos": 0.0, "clip": 0.1}),
    "focal": (hierloss.FocalLoss, HF.focal_loss, {}),
    "zlpr": (hierloss.ZLPRLoss, HF.zlpr_loss, {}),
    "zlpr_tempered": (hierloss.ZLPRLoss, HF.zlpr_loss, {"temperature": 0.5}),
    "multilabel_softmax": (hierloss.MultiLabelSoftmaxLoss, HF.multilabel_softmax_loss, {}),
}
FORMS = ("module", "functional")


def make(name: str, form: str, **overrides: object) -> LossFn:
    """The loss ``name`` as ``fn(input, target)``, through its module or its functional form."""
    cls, fn, kwargs = LOSSES[name]
    kwargs = {**kwargs, **overrides}
    if form == "module":
        return cls(**kwargs)  # type: ignore[no-any-return]
    return lambda input, target: fn(input, target, **kwargs)


def data(seed: int = 0, n: int = 6, c: int = 5) -> tuple[Tensor, Tensor]:
    """float64 logits and 0/1 targets with a positive and a negative in every row."""
    gen = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, c, dtype=torch.float64, generator=gen)
    y = (torch.rand(n, c, generator=gen) < 0.4).double()
    y[:, 0], y[:, 1] = 1.0, 0.0
    return x, y


def autograd_grad(fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """The gradient autograd computes for ``fn(x, y)`` (through the fused kernels)."""
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(fn(leaf, y), leaf)
    return g


def loop_per_sample_grads(fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample gradients the plain way: one backward per sample, each on a (1, C) batch."""
    return torch.cat([autograd_grad(fn, x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", LOSSES)
def test_func_grad_equals_autograd(name: str, form: str) -> None:
    """torch.func.grad of the loss equals the gradient autograd computes through the fused kernel."""
    fn = make(name, form)
    x, y = data(1)
    torch.testing.assert_close(grad(fn)(x, y), autograd_grad(fn, x, y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", LOSSES)
def test_func_jvp_equals_directional_derivative(name: str, form: str) -> None:
    """torch.func.jvp returns the loss and its derivative along a tangent, ⟨∇ℓ, v⟩ with ∇ℓ from autograd."""
    fn = make(name, form)
    x, y = data(2)
    v = torch.randn_like(x)
    value, tangent = jvp(lambda z: fn(z, y), (x,), (v,))
    torch.testing.assert_close(value, fn(x, y), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(tangent, (autograd_grad(fn, x, y) * v).sum(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", LOSSES)
def test_forward_ad_dual_tensor(name: str, form: str) -> None:
    """Forward-mode AD with torch.autograd.forward_ad dual tensors gives the same directional derivative."""
    fn = make(name, form)
    x, y = data(3)
    v = torch.randn_like(x)
    with forward_ad.dual_level():
        out = fn(forward_ad.make_dual(x, v), y)
        tangent = forward_ad.unpack_dual(out).tangent
    torch.testing.assert_close(tangent, (autograd_grad(fn, x, y) * v).sum(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("validate_args", [True, False])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", LOSSES)
def test_vmap_grad_per_sample_equals_loop(name: str, form: str, validate_args: bool) -> None:
    """vmap(grad(...)) per-sample gradients equal a Python loop of single-sample gradients, whatever validate_args."""
    fn = make(name, form, validate_args=validate_args)
    x, y = data(4, n=7)
    per_sample = vmap(grad(lambda xi, yi: fn(xi[None], yi[None])))(x, y)
    torch.testing.assert_close(per_sample, loop_per_sample_grads(fn, x, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_grad_with_missing_and_ignored_targets(name: str) -> None:
    """NaN and ignore_index=-1 targets are left out under vmap(grad(...)) exactly as in the per-sample loop."""
    fn = make(name, "functional", ignore_index=-1)
    x, y = data(5, n=7)
    y[0, 2], y[3, 4], y[5, 3] = float("nan"), -1.0, float("nan")
    per_sample = vmap(grad(lambda xi, yi: fn(xi[None], yi[None])))(x, y)
    torch.testing.assert_close(per_sample, loop_per_sample_grads(fn, x, y), rtol=1e-10, atol=1e-12)
    assert bool(torch.isfinite(per_sample).all())


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_over_logits_with_a_shared_target(name: str) -> None:
    """vmap over a stack of logit batches (an ensemble) against one unbatched target equals a loop over the stack."""
    fn = make(name, "module")
    x, y = data(6)
    stack = torch.stack([x, 0.5 * x, x + 1])
    grads = vmap(grad(fn), in_dims=(0, None))(stack, y)
    torch.testing.assert_close(grads, torch.stack([autograd_grad(fn, s, y) for s in stack]), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_skips_value_checks_of_a_batched_target(name: str) -> None:
    """A vmap-batched target cannot be read back: validate_args=True skips its value check (as under torch.compile)
    while the same target raises outside vmap."""
    fn = make(name, "functional")
    x, y = data(7)
    y[2, 3] = 2.0
    with pytest.raises(ValueError, match=r"Expected `target` values in \[0, 1\] or NaN, but column 3 holds 2.0"):
        fn(x, y)
    per_sample = vmap(grad(lambda xi, yi: fn(xi[None], yi[None])))(x, y)
    assert per_sample.shape == x.shape


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", LOSSES)
def test_hessian_equals_double_backward(name: str, form: str) -> None:
    """torch.func.hessian equals autograd's double backward (create_graph=True) through the fused kernel."""
    fn = make(name, form)
    x, y = data(8, n=3, c=4)
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(fn(leaf, y), leaf, create_graph=True)
    rows = [torch.autograd.grad(g.reshape(-1)[k], leaf, retain_graph=True)[0].reshape(-1) for k in range(x.numel())]
    h = hessian(lambda z: fn(z, y))(x).reshape(x.numel(), x.numel())
    torch.testing.assert_close(h, torch.stack(rows), rtol=1e-10, atol=1e-12)
