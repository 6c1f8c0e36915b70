"""How the label-wise losses (ASL, focal, ZLPR, multi-label softmax) run fast: their shared input check, target
preparation, the rule that picks a fused kernel or the plain formula, and the engine that runs a kernel.

What each loss *is* — formula, shapes, validation, reduction, and its terms written in plain PyTorch (the
*reference*) — lives in its own module. Here lives only speed:

* :func:`use_fused` is the one dispatch rule. The fused kernels run in eager mode when autograd (or nothing) needs
  the result; inside a ``torch.func`` transform (``grad``, ``jvp``, ``vmap``, ``jacrev``, ...), under forward-mode
  AD, under ``torch.compile`` (which fuses the reference itself) and when the target requires a gradient, the
  reference runs, so every transform sees plain PyTorch ops.
* :func:`fused_loss` runs a loss's *kernel*. A kernel computes, in one sweep, the loss terms and — when autograd
  needs it — their derivative ``∂ℓ/∂x`` with respect to the logits, from the intermediates it already holds (the
  sigmoid, the log, the focusing weight), instead of autograd saving every intermediate and replaying each
  operation backwards. The reduction is folded in, so the backward is one multiplication. Higher derivatives
  (``create_graph=True``) differentiate the reference, so they stay exact. Each kernel is tested against its
  reference, values and gradients.
* On the CPU the sweep goes over blocks (:func:`block_numel`: ``BLOCK_BYTES`` per temporary and thread), so a
  kernel's temporaries stay in the caches instead of streaming through memory once per operation, and the
  temporaries come from a scratch pool kept per Python thread and dtype (:class:`_Scratch`: at most
  ``MAX_SCRATCH`` blocks, 32 MiB in float32, held for the thread's life) instead of fresh allocations: a dozen
  fresh tensors per call make the C allocator hand memory back to the system and fault it in again on every call,
  which costs more than the arithmetic at CheXpert size.
  Blocks of an element-wise loss start at multiples of ``BLOCK_ALIGN`` elements, so every element takes the same
  vectorised code path as over the whole tensor (the ASL kernel reproduces the authors' bits).
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch import Tensor

from hierloss._masking import on_eager_cpu, target_mask
from hierloss._reduction import reduce_loss
from hierloss._validation import check_target, validating

__all__ = ["asymmetric_kernel", "block_numel", "focal_kernel", "fused_loss", "is_transformed",
           "multilabel_softmax_kernel", "prepare_target", "use_fused", "zlpr_kernel"]

# Bytes per temporary and thread in one block of a CPU sweep: a kernel's dozen such temporaries fit the caches.
BLOCK_BYTES = 1 << 19
# Element-wise blocks start at multiples of this many elements (a multiple of every CPU vector loop's stride).
BLOCK_ALIGN = 64
# Most temporaries one kernel takes from the scratch pool (more come from the allocator).
MAX_SCRATCH = 16
# Blocks grow with the torch threads up to this many (so a pool holds at most 16 × 4 × 512 KiB per dtype).
MAX_BLOCK_THREADS = 4

Reference = Callable[[Tensor], Tensor]


def is_transformed(tensor: Tensor) -> bool:
    """True when ``tensor`` is being transformed by ``torch.func`` (a batched tensor of ``vmap``, a tracked tensor of
    ``grad``/``jvp``): its values cannot, or must not, be read back to the host. False while ``torch.compile``
    traces (which skips every read-back anyway)."""
    return not torch.compiler.is_compiling() and bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))


def prepare_target(target: Tensor, ignore_index: float | None, validate_args: bool, dtype: torch.dtype,
                   detect_zero_one: bool = True) -> tuple[Tensor, Tensor | None, bool]:
    """Check and clean ``target`` for a loss computed in ``dtype``; returns ``(y, valid, zero_one)``.

    ``y`` is the target in ``dtype`` with left-out entries set to 0, ``valid`` the bool mask of the entries that
    count (``None``: all), ``zero_one`` whether every target is exactly 0 or 1. On the CPU in eager mode one pass
    asks that question first (the read-back is free there; ``detect_zero_one=False`` skips it for a kernel without
    a 0/1 form): a 0/1 target holds no NaN and no other value, so it needs neither the value check nor a mask, and
    the kernels may use their 0/1 forms. Otherwise the values are
    checked (:func:`hierloss._validation.check_target`, when ``validate_args``) and masked
    (:func:`hierloss._masking.target_mask`). A target being transformed by ``torch.func`` (a ``vmap``-batched
    target) cannot be read back: its values are not checked, as under ``torch.compile``, and it is masked
    element-wise.
    """
    transformed = is_transformed(target)
    if (detect_zero_one and not transformed and on_eager_cpu(target) and ignore_index not in (0, 1)
            and _zero_one(target)):
        return target.to(dtype), None, True
    if validating(validate_args) and not transformed:
        check_target(target, ignore_index)
    clean, valid = target_mask(target, ignore_index, nan_shortcut=not transformed)
    return clean.to(dtype), valid, False


def _zero_one(target: Tensor) -> bool:
    """Whether every entry of a CPU tensor is exactly 0 or 1: ``y² = y`` everywhere (in floating point that holds
    for 0 and 1 only, and never for NaN)."""
    if target.dtype == torch.bool:
        return True
    if target.numel() == 0:
        return False
    lo, hi = torch.aminmax(target.mul(target).sub_(target))  # aminmax: faster than torch.equal or torch.any
    return lo.item() == 0 and hi.item() == 0


def use_fused(input: Tensor, target: Tensor) -> bool:
    """The dispatch rule: the fused kernels, or the reference formula.

    Fused in eager mode, outside any ``torch.func`` transform, without forward-mode AD tangents on ``input`` and
    with a target that needs no gradient; the reference everywhere else (transforms, forward AD, ``torch.compile``,
    a target that requires grad), so those see plain, differentiable PyTorch ops.
    """
    return not (torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None
                or target.requires_grad
                or forward_ad.unpack_dual(input).tangent is not None)  # type: ignore[no-untyped-call]


def block_numel(input: Tensor, host: bool | None = None) -> int:
    """Elements per block of a sweep: ``BLOCK_BYTES`` per torch thread (up to ``MAX_BLOCK_THREADS``) on the CPU;
    the whole tensor elsewhere (an accelerator launches its kernels once per operation, so splitting only adds
    launches). ``host``: see :func:`fused_loss`."""
    if not (input.device.type == "cpu" if host is None else host):
        return max(input.numel(), 1)
    return max(BLOCK_BYTES // input.element_size(), BLOCK_ALIGN) * min(torch.get_num_threads(), MAX_BLOCK_THREADS)


_POOLS = threading.local()  # per thread: {(dtype, device): _Pool}


class _Pool:
    """One thread's scratch buffers and constants for one dtype and device."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self.views: list[Tensor | None] = []  # the last view handed out of each buffer (reused while shapes match)
        self.constants: dict[float, Tensor] = {}


class _Scratch:
    """Temporaries of one kernel call on one block: ``new()`` returns the next, shaped and typed like the block;
    ``new.const(v)`` the number ``v`` as a cached 0-dim tensor of that dtype (a Python number would be wrapped
    into a fresh tensor by every operation).

    On the CPU both come from a per-thread pool that outlives the call (no allocation, no page faults); on an
    accelerator, whose caching allocator already reuses memory, temporaries are fresh tensors and constants 0-dim
    CPU tensors. ``on_cpu`` tells the kernels whether reading a value back is free.
    """

    __slots__ = ("like", "on_cpu", "pool", "shape", "taken")

    def __init__(self, like: Tensor, host: bool | None = None) -> None:
        self.like, self.shape, self.taken = like, like.shape, 0
        self.on_cpu = like.device.type == "cpu" if host is None else host
        self.pool: _Pool | None = None
        if self.on_cpu:
            pools = _POOLS.__dict__.setdefault("pools", {})
            key = (like.dtype, like.device)
            self.pool = pools.get(key) or pools.setdefault(key, _Pool())

    def __call__(self) -> Tensor:
        like, pool, i = self.like, self.pool, self.taken
        if pool is None or i >= MAX_SCRATCH:
            return torch.empty_like(like)
        self.taken = i + 1
        view = pool.views[i] if i < len(pool.views) else None
        if view is not None and view.shape == self.shape:
            return view
        n = like.numel()
        with torch.inference_mode(False):  # normal tensors, writable in and out of inference mode
            if i == len(pool.buffers):
                pool.buffers.append(torch.empty(n, dtype=like.dtype, device=like.device))
                pool.views.append(None)
            elif pool.buffers[i].numel() < n:
                pool.buffers[i] = torch.empty(n, dtype=like.dtype, device=like.device)
            view = pool.views[i] = pool.buffers[i][:n].view(like.shape)
        return view

    def const(self, value: float) -> Tensor:
        constants = self.pool.constants if self.pool is not None else _CPU_SCALARS.setdefault(self.like.dtype, {})
        constant = constants.get(value)
        if constant is None:
            if len(constants) > 64:  # hyper-parameter schedules: keep the cache small
                constants.clear()
            with torch.inference_mode(False):
                # on an accelerator a 0-dim CPU tensor: an operand every device takes without a copy or a sync
                constant = constants[value] = torch.tensor(value, dtype=self.like.dtype)
        return constant


_CPU_SCALARS: dict[torch.dtype, dict[float, Tensor]] = {}  # constants of accelerator kernels, by dtype


# kernel(x, y, valid, loss_out, derivative_out, scratch): writes the terms (and ∂ℓ/∂x when derivative_out is given).
Kernel = Callable[[Tensor, Tensor, "Tensor | None", Tensor, "Tensor | None", _Scratch], None]


def _sweep(kernel: Kernel, x: Tensor, y: Tensor, valid: Tensor | None, per_sample: bool, derivative: bool,
           host: bool | None = None, reduction: str = "none") -> tuple[Tensor, Tensor | None]:
    """Run ``kernel`` over blocks of ``(x, y, valid)``; return the reduced terms and, if asked, ``∂ℓ/∂x``."""
    x, y = x.contiguous(), y.contiguous()
    valid = None if valid is None else valid.contiguous()
    mask = None if per_sample else valid
    deriv = torch.empty_like(x) if derivative else None
    step = block_numel(x, host)
    if x.numel() <= step:  # one block; terms that are reduced here need no memory of their own
        scratch = _Scratch(x, host)
        if reduction == "none" or per_sample or not scratch.on_cpu:
            loss = x.new_empty(x.shape[:1] if per_sample else x.shape)
        else:
            loss = scratch()
        kernel(x, y, valid, loss, deriv, scratch)
        return reduce_loss(loss, reduction, mask), deriv
    loss = x.new_empty(x.shape[:1] if per_sample else x.shape)
    if per_sample:  # blocks of whole rows
        rows = max(1, step // max(x.shape[1], 1))
        for i in range(0, x.shape[0], rows):
            j = i + rows
            kernel(x[i:j], y[i:j], None if valid is None else valid[i:j], loss[i:j],
                   None if deriv is None else deriv[i:j], _Scratch(x[i:j], host))
        return reduce_loss(loss, reduction), deriv
    step -= step % BLOCK_ALIGN
    xf, yf, lf = x.view(-1), y.view(-1), loss.view(-1)
    vf = None if valid is None else valid.view(-1)
    df = None if deriv is None else deriv.view(-1)
    for i in range(0, xf.numel(), step):
        j = i + step
        kernel(xf[i:j], yf[i:j], None if vf is None else vf[i:j], lf[i:j], None if df is None else df[i:j],
               _Scratch(xf[i:j], host))
    return reduce_loss(loss, reduction, mask), deriv


class _FusedLoss(torch.autograd.Function):
    """A fused kernel's reduced loss, with ``∂ℓ/∂x`` kept from the forward sweep: the backward is one multiplication
    by the incoming gradient (divided by the mean's count), not a replay of every operation. Higher derivatives
    (``create_graph=True``) differentiate the reference, so they stay exact."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, valid: Tensor | None, kernel: Kernel, reference: Reference,
                per_sample: bool, reduction: str, host: bool | None) -> Tensor:
        loss, deriv = _sweep(kernel, x, y, valid, per_sample, True, host, reduction)
        mask = None if per_sample else valid
        ctx.save_for_backward(x, deriv, mask)
        ctx.reference, ctx.per_sample, ctx.reduction = reference, per_sample, reduction
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, deriv, mask = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            loss = reduce_loss(ctx.reference(x), ctx.reduction, mask)
            (grad_x,) = torch.autograd.grad(loss, x, grad, create_graph=True)
        elif ctx.reduction == "none":
            grad_x = deriv * (grad.unsqueeze(-1) if ctx.per_sample else grad)
        elif ctx.reduction == "sum":
            grad_x = deriv * grad
        else:  # mean: over the samples, the elements, or the valid elements
            count = deriv.shape[0] if ctx.per_sample else deriv.numel() if mask is None else mask.sum().clamp_min(1)
            grad_x = deriv * (grad / count)
        return grad_x, None, None, None, None, None, None, None


def fused_loss(kernel: Kernel, reference: Reference, x: Tensor, y: Tensor, valid: Tensor | None, *,
               per_sample: bool, reduction: str, host: bool | None = None) -> Tensor:
    """The loss of ``x`` (``(N, C)`` float logits) against the clean target ``y`` by ``kernel``, reduced.

    The kernel's terms are ``(N,)`` per sample when ``per_sample``, else ``(N, C)`` per element; ``reduction`` as
    :func:`hierloss._reduction.reduce_loss` (over the valid elements for an element-wise loss). ``valid`` is the
    mask of :func:`prepare_target` (``None``: every entry counts). When autograd needs the gradient the kernel also
    computes ``∂ℓ/∂x``; ``reference(x)`` (the same terms in plain PyTorch) is only called for higher derivatives.
    ``host`` runs the CPU's way (blocks, scratch pool, read-backs) or an accelerator's (one block, fresh
    temporaries, no read-back); default: the device's. Tests take the accelerator's path on the CPU with
    ``host=False``.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return _FusedLoss.apply(  # type: ignore[no-any-return,no-untyped-call]
            x, y, valid, kernel, reference, per_sample, reduction, host)
    return _sweep(kernel, x, y, valid, per_sample, False, host, reduction)[0]


# --------------------------------------------------------------------------------------------------------------------
# Kernels. Each writes the terms into `loss` and, when `deriv` is given, ∂ℓ/∂x into `deriv`; `valid` (bool, or None)
# zeroes left-out entries; `new()` hands out temporaries. The formulas are those of the loss modules' references
# (their docstrings); the comments here say only how they are computed. Numbers enter operations as `new.const(v)`,
# the same float32 (or float64) value an operation would make of the Python number, without making it every call.


def _one_minus(t: Tensor, new: _Scratch, out: Tensor | None = None) -> Tensor:
    """``1 − t``, into ``out`` or a new temporary."""
    return torch.sub(new.const(1.0), t, out=new() if out is None else out)


@functools.lru_cache(maxsize=64)
def _adds_exactly(a: float, b: float, total: float, dtype: torch.dtype) -> bool:
    """Whether ``a + b`` rounds to ``total`` in ``dtype`` (float32 or float64), each number first rounded to it."""
    if dtype == torch.float64:
        return a + b == total
    f32 = _round_float32
    return f32(f32(a) + f32(b)) == f32(total)


def _round_float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def asymmetric_kernel(x: Tensor, y: Tensor, valid: Tensor | None, loss: Tensor, deriv: Tensor | None,
                      new: _Scratch, *, gamma_neg: float, gamma_pos: float, clip: float, eps: float,
                      detach_focusing_weight: bool, zero_one: bool) -> None:
    """ASL terms, bit for bit the authors' operations.

    Two forms, both exact: the *blend* form is the authors' sequence (``y·a + (1 − y)·b`` for every mixed
    quantity), right for any target in ``[0, 1]``; the *select* form, for 0/1 targets (``zero_one``, see
    :func:`prepare_target`), computes ``p_t`` once and takes one log instead of two (``y·a + (1 − y)·b`` is ``a`` or
    ``b`` exactly when ``y`` is 0 or 1).
    """
    focusing = gamma_neg > 0 or gamma_pos > 0
    tiny = torch.finfo(x.dtype).tiny
    p = torch.sigmoid(x, out=new())
    q0 = _one_minus(p, new)
    clamp_mask = None
    if clip > 0:
        qr = torch.add(q0, new.const(clip), out=new())
        if deriv is not None and (not zero_one or gamma_neg == 0):  # ∂ of clamp(max=1): 1 where q0 + clip <= 1
            clamp_mask = torch.le(qr, new.const(1.0), out=new())
        qr.clamp_(max=1)  # 1 − p_m
    else:
        qr = q0
    if zero_one:  # select form
        # p_t = y·p + (1 − y)·(1 − p_m), one of the two exactly: lerp(a, b, w) is a + w·(b − a) for w < 0.5 and
        # b − (b − a)·(1 − w) above, so a at w = 0 and b at w = 1, to the bit
        pt = torch.lerp(qr, p, y, out=new())
        pc = torch.clamp(pt, min=eps, out=new() if qr is q0 else qr)
        if deriv is not None:
            torch.ge(pt, new.const(eps), out=deriv).div_(pc)  # [p_t ≥ eps]/max(p_t, eps)
        log_pt = pc.log_()
        if focusing:
            b = _one_minus(pt, new)
            if _adds_exactly(gamma_neg, gamma_pos - gamma_neg, gamma_pos, x.dtype):  # γ− + y·(γ+ − γ−)
                g = torch.add(new.const(gamma_neg), y, alpha=gamma_pos - gamma_neg, out=new())
            else:
                g = torch.mul(_one_minus(y, new), new.const(gamma_neg), out=new()).add_(y, alpha=gamma_pos)
            w = torch.pow(b, g, out=pt)  # g is γ+ or γ−, exactly
            torch.addcmul(new.const(0.0), log_pt, w, value=-1, out=loss)
        else:
            torch.neg(log_pt, out=loss)
        if valid is not None:
            loss.mul_(valid)
        if deriv is None:
            return
        # ∂ℓ/∂x = w·p(1 − p)·(c − y)·([p_t ≥ eps]/p_t − g·log(p_t)/(1 − p_t)), c = (1 − y)·[clamp passes]
        if focusing and not detach_focusing_weight:
            deriv.addcdiv_(g.mul_(log_pt), b.clamp_min_(tiny), value=-1)  # b = 0 only where log p_t = 0
        s = p.mul_(q0)  # p(1 − p)
        if clamp_mask is None:  # c = 1 − y: p(1 − p)·(1 − 2y)
            deriv.mul_(s.addcmul_(s, y, value=-2))
        else:
            deriv.mul_(s).mul_(_one_minus(y, new).mul_(clamp_mask).sub_(y))
        if focusing:
            deriv.mul_(w)
        if valid is not None:
            deriv.mul_(valid)
        return
    # blend form: the authors' sequence
    ny = _one_minus(y, new)
    pc, qc = torch.clamp(p, min=eps, out=new()), torch.clamp(qr, min=eps, out=new())
    log_p, log_q = torch.log(pc, out=new()), torch.log(qc, out=new())
    a = torch.mul(y, log_p, out=log_p).add_(log_q.mul_(ny))  # the authors' los_pos + los_neg
    if focusing:
        pt = torch.mul(p, y, out=new()).add_(torch.mul(qr, ny, out=log_q))
        b = _one_minus(pt, new, out=pt)
        g = torch.mul(y, new.const(gamma_pos), out=new()).add_(torch.mul(ny, new.const(gamma_neg), out=log_q))
        w = torch.pow(b, g, out=new())
        torch.addcmul(new.const(0.0), a, w, value=-1, out=loss)
    else:
        torch.neg(a, out=loss)
    if valid is not None:
        loss.mul_(valid)
    if deriv is None:
        return
    # a′ = y·[p ≥ eps]·(1 − p) − (1 − y)·c·[1 − p_m ≥ eps]·p(1 − p)/(1 − p_m);  p_t′ = p(1 − p)·(y − (1 − y)·c)
    # ∂ℓ/∂x = −w·a′ + a·g·(w/(1 − p_t))·p_t′
    torch.ge(p, new.const(eps), out=deriv).mul_(q0).mul_(y)
    s = p.mul_(q0)
    neg_direction = ny if clamp_mask is None else ny.mul_(clamp_mask)
    deriv.sub_(torch.ge(qr, new.const(eps), out=q0).mul_(s).div_(qc).mul_(neg_direction))
    if focusing:
        deriv.mul_(w).neg_()
        if not detach_focusing_weight:
            step = g.mul_(a).mul_(w).div_(b.clamp_min_(tiny)).mul_(s)  # b = 0 only where w = 0 or a = 0
            deriv.add_(step.mul_(torch.sub(y, neg_direction, out=pc)))
    else:
        deriv.neg_()
    if valid is not None:
        deriv.mul_(valid)


def focal_kernel(x: Tensor, y: Tensor, valid: Tensor | None, loss: Tensor, deriv: Tensor | None, new: _Scratch,
                 *, alpha: float | None, gamma: float) -> None:
    """Sigmoid focal terms ``α_t·(1 − p_t)^γ·BCE``; ``σ(x)`` and ``σ(−x)`` both computed (no ``1 − p``
    cancellation), BCE as PyTorch computes it, ``(1 − y)·x − log σ(x)``."""
    p = torch.sigmoid(x, out=new())
    pn = torch.neg(x, out=new()).sigmoid_()
    ce = torch.mul(_one_minus(y, new), x, out=new()).sub_(F.logsigmoid(x))
    m = torch.lerp(p, pn, y, out=new())  # 1 − p_t = y·σ(−x) + (1 − y)·σ(x)
    mg = None if gamma == 0 else m if gamma == 1 else torch.mul(m, m, out=new()) if gamma == 2 else \
        torch.pow(m, gamma, out=new())
    at = None if alpha is None else torch.add(new.const(1 - alpha), y, alpha=2 * alpha - 1, out=new())  # α_t
    if mg is None:
        loss.copy_(ce)
    else:
        torch.mul(mg, ce, out=loss)
    if at is not None:
        loss.mul_(at)
    if valid is not None:
        loss.mul_(valid)
    if deriv is None:
        return
    # ∂ℓ/∂x = α_t·((1 − p_t)^γ·(p − y) + γ·(1 − p_t)^(γ−1)·(1 − 2y)·p(1 − p)·BCE)
    torch.sub(p, y, out=deriv)
    if mg is not None:
        deriv.mul_(mg)
        second = p.mul_(pn).mul_(ce)
        second.addcmul_(second, y, value=-2)  # ·(1 − 2y)
        if gamma == 2:
            second.mul_(m)
        elif gamma != 1:
            second.mul_(mg.div_(m.clamp_min_(torch.finfo(x.dtype).tiny)))  # m = 0 only where mg = 0
        deriv.add_(second, alpha=gamma)
    if at is not None:
        deriv.mul_(at)
    if valid is not None:
        deriv.mul_(valid)


def _sets(y: Tensor, valid: Tensor | None, zero_one: bool, new: _Scratch) -> tuple[Tensor, Tensor]:
    """Float masks of the positives (``y > 0.5``) and the negatives of a block, both 0 at left-out entries."""
    if zero_one:  # y is its own mask (and nothing is left out)
        return y, _one_minus(y, new)
    pos = torch.gt(y, new.const(0.5), out=new())
    if valid is None:
        return pos, _one_minus(pos, new)
    pos.mul_(valid)
    return pos, torch.neg(pos, out=new()).add_(valid)


def _exp_safe_limit(x: Tensor) -> float:
    """Largest ``|v|`` for which ``Σ_j exp(v_j)`` over a row of ``x`` cannot overflow: ``log(max) − log(C) − 1``."""
    return math.log(torch.finfo(x.dtype).max) - math.log(max(x.shape[-1], 1)) - 1.0


def _unshifted(v: Tensor, on_cpu: bool) -> bool:
    """Whether a CPU block's exponentials can go without a shift (every ``|v| <`` :func:`_exp_safe_limit`)."""
    if not on_cpu or v.numel() == 0:
        return False
    lo, hi = torch.aminmax(v)
    limit = _exp_safe_limit(v)
    return -limit < lo.item() and hi.item() < limit  # NaN fails


def zlpr_kernel(x: Tensor, y: Tensor, valid: Tensor | None, loss: Tensor, deriv: Tensor | None, new: _Scratch,
                *, temperature: float, zero_one: bool, shift: bool | None = None) -> None:
    """ZLPR per-sample terms ``log(1 + Σ_Q e^{s}) + log(1 + Σ_P e^{−s})`` from one exponential per element.

    ``v = ±s`` (``−s`` on positives) goes through one ``exp``; two masked row sums give both sets. On the CPU, when
    every ``|s|`` is below :func:`_exp_safe_limit`, no shift is needed and ``log1p`` of the sums is exact to
    rounding; otherwise (and on accelerators) each set is shifted by its own row maximum. ``shift`` forces one way.
    """
    s = x if temperature == 1 else torch.div(x, new.const(temperature), out=new())
    pos, neg = _sets(y, valid, zero_one, new)
    v = torch.addcmul(s, s, pos, value=-2, out=new())  # −s on positives, s elsewhere (s − 2s = −s exactly)
    if shift is None:
        shift = not _unshifted(s, new.on_cpu)
    product = new()
    if not shift:
        e = v.exp_()
        sum_p = torch.mul(e, pos, out=product).sum(-1)
        sum_q = torch.mul(e, neg, out=product).sum(-1)
        torch.add(torch.log1p(sum_p), torch.log1p(sum_q), out=loss)
        total_p, total_q = sum_p.add_(1), sum_q.add_(1)
    else:
        if valid is not None:
            v.masked_fill_(~valid, float("-inf"))
        big = torch.finfo(v.dtype).max  # v − big on the other set: out of the row maximum, never NaN
        max_p = torch.add(v, _one_minus(pos, new), alpha=-big, out=product).amax(-1, keepdim=True).clamp_min_(0)
        max_q = torch.add(v, pos, alpha=-big, out=product).amax(-1, keepdim=True).clamp_min_(0)
        e = v.sub_(torch.where(pos > 0, max_p, max_q)).exp_()  # the appended 0 bounds each shift below
        total_p = torch.exp(-max_p).squeeze(-1).add_(torch.mul(e, pos, out=product).sum(-1))
        total_q = torch.exp(-max_q).squeeze(-1).add_(torch.mul(e, neg, out=product).sum(-1))
        torch.add(max_p.squeeze(-1) + torch.log(total_p), max_q.squeeze(-1) + torch.log(total_q), out=loss)
    if deriv is None:
        return
    # ∂ℓ/∂s_j = e_j/total_Q on negatives, −e_j/total_P on positives; ∂s/∂x = 1/temperature
    inv_q = total_q.reciprocal_().unsqueeze(-1)
    inv_p = total_p.reciprocal_().unsqueeze(-1)
    if temperature != 1:
        inv_q, inv_p = inv_q / temperature, inv_p / temperature
    torch.mul(neg, inv_q, out=deriv).sub_(torch.mul(pos, inv_p, out=product)).mul_(e)


def multilabel_softmax_kernel(x: Tensor, y: Tensor, valid: Tensor | None, loss: Tensor, deriv: Tensor | None,
                              new: _Scratch, *, zero_one: bool, shift: bool | None = None) -> None:
    """Multi-label softmax per-sample terms ``mean_{i∈P} softplus(logsumexp_Q x − x_i)``.

    One ``exp`` per element gives ``Σ_Q e^x`` (unshifted on the CPU when every ``|x|`` is below
    :func:`_exp_safe_limit`, else shifted by the negatives' row maximum), one ``softplus`` per element the terms,
    one ``sigmoid`` per element their derivative. ``shift`` forces one way.
    """
    pos, neg = _sets(y, valid, zero_one, new)
    count_p = pos.sum(-1)
    has_neg = count_p < x.shape[-1] if zero_one else neg.sum(-1) > 0
    if shift is None:
        shift = not _unshifted(x, new.on_cpu)
    if not shift:
        e = torch.exp(x, out=new()).mul_(neg)
        max_q = None
    else:
        big = torch.finfo(x.dtype).max  # x − big off the negatives: out of the row maximum and of the sum
        e = torch.add(x, _one_minus(neg, new), alpha=-big, out=new())
        max_q = torch.where(has_neg, e.amax(-1), 0.0).unsqueeze(-1)
        e.sub_(max_q).exp_()
    sum_q = torch.where(has_neg, e.sum(-1), 1.0)
    lse_q = torch.log(sum_q) if max_q is None else torch.log(sum_q).add_(max_q.squeeze(-1))
    z = torch.sub(lse_q.unsqueeze(-1), x, out=new())  # logsumexp_Q x − x_i
    scale = has_neg / count_p.clamp_min(1)  # 1/|P|, 0 without negatives
    torch.mul((F.softplus(z) * pos).sum(-1), scale, out=loss)
    if deriv is None:
        return
    # ∂ℓ/∂x_i = −σ(z_i)/|P| on positives; ∂ℓ/∂x_j = (Σ_P σ(z_i))/|P| · e_j/Σ_Q e on negatives
    sig = z.sigmoid_().mul_(pos)
    coef = (sig.sum(-1) / sum_q).unsqueeze(-1)
    torch.mul(e, coef, out=deriv).sub_(sig).mul_(scale.unsqueeze(-1))
