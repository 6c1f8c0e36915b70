"""How HBCE is computed: the plain-PyTorch reference, the fused kernel, its CPU tuning, and the rule choosing them.

:func:`hierloss.losses.hbce.hbce_loss` states *what* the loss is; this module decides *how* it runs. There are three
backends, all computing the same numbers (``tests/losses/test_hbce_backends.py`` holds them to each other):

``'reference'``
    Plain PyTorch: BCE per element, its masked mean per sample, plus ``Σ_e w_e · penalty_e`` from the penalty
    forms' values (:mod:`hierloss._penalty_forms`); autograd differentiates it, to any order.
``'fused'``
    One ``torch.autograd.Function`` with an analytic backward that writes the BCE gradient and the penalty
    forms' derivatives directly. This is exactly what a CUDA tensor (or any accelerator, or ``torch.compile``)
    runs: element-wise ops, matrix products and gathers only, nothing read back to the host.
``'fused_cpu'``
    The same Function with four CPU shortcuts switched on (eager mode on the CPU only, where they were measured
    to pay; see ``docs/benchmarks.md``): ``Σ softplus`` with one logarithm per 32 elements
    (:func:`_softplus_sum`), row sums of short rows as matrix-vector products (:func:`_row_sums`), a NaN-free
    target detected with one host-side sum so that nothing is masked, and masks written as floats by the
    comparisons themselves (:func:`_cpu_target_mask`).

The fused kernel reads the edges in one of two layouts: ``'dense'``, a signed ``(E, C)`` incidence matrix, so
that every gap ``v_child − v_parent`` of a batch is one matrix product and the gradient another (difference forms on
small hierarchies); or ``'gather'``, rows of a ``(C, N)`` copy of the values gathered per edge and scattered back
(``embedding_bag`` for the difference forms; ``index_select`` / ``index_add_`` for the pair forms).

The rule, in :func:`select_backend` and :func:`select_layout`, can be overridden for debugging with
:func:`hbce_backend`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from hierloss._masking import nan_free_on_cpu, on_eager_cpu, target_mask
from hierloss._penalty_forms import CLIP, FORMS, PenaltyForm, edge_penalty, penalty_space

__all__ = ["BACKENDS", "DENSE_MAX_ENTRIES", "LAYOUTS", "EdgePlan", "edge_plan", "hbce", "hbce_backend",
           "hbce_reference", "select_backend", "select_layout"]

BACKENDS: tuple[str, ...] = ("reference", "fused", "fused_cpu")
LAYOUTS: tuple[str, ...] = ("dense", "gather")

#: Largest ``E·C`` for which difference forms use the ``'dense'`` layout (its products cost ``N·E·C``
#: multiply-adds; the measurements behind this number are in ``docs/benchmarks.md``).
DENSE_MAX_ENTRIES = 2048

_forced_backend: str | None = None
_forced_layout: str | None = None


@contextlib.contextmanager
def hbce_backend(backend: str | None = None, layout: str | None = None) -> Iterator[None]:
    """Force how :func:`~hierloss.losses.hbce.hbce_loss` runs inside the ``with`` block (for debugging).

    Args:
        backend: ``'reference'`` (plain PyTorch and autograd), ``'fused'`` (the kernel accelerators and
            ``torch.compile`` run) or ``'fused_cpu'`` (the same kernel with its CPU shortcuts; CPU tensors in eager
            mode only); ``None`` keeps the automatic choice.
        layout: ``'dense'`` or ``'gather'``: how the fused kernel reads the edges of a difference form (pair forms
            always gather); ``None`` keeps the automatic choice.

    Raises:
        ValueError: for an unknown backend or layout.

    Example:
        >>> import torch
        >>> from hierloss import HBCELoss, Hierarchy
        >>> from hierloss.losses import hbce_backend
        >>> criterion = HBCELoss(Hierarchy.from_edges([("a", "b")]))
        >>> logits, target = torch.tensor([[-1.0, 2.0]]), torch.tensor([[1.0, 1.0]])
        >>> with hbce_backend("reference"):
        ...     slow = criterion(logits, target)
        >>> torch.testing.assert_close(slow, criterion(logits, target))
    """
    global _forced_backend, _forced_layout
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))} or None, got {backend!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))} or None, got {layout!r}")
    before = _forced_backend, _forced_layout
    _forced_backend, _forced_layout = backend, layout
    try:
        yield
    finally:
        _forced_backend, _forced_layout = before


def select_backend(x: Tensor, from_logits: bool) -> str:
    """The backend for logits or probabilities ``x``. The rule, first match wins:

    1. ``from_logits=False``: ``'reference'`` (the reference's clipped probability BCE; the kernel reads logits);
    2. a backend forced with :func:`hbce_backend`;
    3. a CPU tensor in eager mode: ``'fused_cpu'``;
    4. anything else (CUDA and other accelerators, ``torch.compile``): ``'fused'``.

    Higher-order gradients (``create_graph=True``) work with every backend: the fused kernel's backward hands
    them to the reference's autograd.

    Raises:
        ValueError: when the forced backend cannot run here (a fused backend with ``from_logits=False``;
            ``'fused_cpu'`` on an accelerator or under ``torch.compile``).
    """
    forced = _forced_backend
    if not from_logits:
        if forced not in (None, "reference"):
            raise ValueError(f"the {forced!r} HBCE backend reads logits; with from_logits=False HBCE always runs "
                             "the 'reference' backend")
        return "reference"
    if forced == "fused_cpu" and not on_eager_cpu(x):
        raise ValueError("the 'fused_cpu' HBCE backend runs only on CPU tensors in eager mode; use 'fused' for "
                         f"{x.device.type} tensors and under torch.compile")
    if forced is not None:
        return forced
    return "fused_cpu" if on_eager_cpu(x) else "fused"


def select_layout(form: PenaltyForm, num_edges: int, num_labels: int) -> str:
    """``'dense'`` for a difference form with ``0 < E·C <= DENSE_MAX_ENTRIES``, else ``'gather'``.

    A layout forced with :func:`hbce_backend` applies to difference forms; pair forms always gather.
    """
    if not form.is_difference or num_edges == 0:
        return "gather"
    if _forced_layout is not None:
        return _forced_layout
    return "dense" if num_edges * num_labels <= DENSE_MAX_ENTRIES else "gather"


class EdgePlan(NamedTuple):
    """What the fused kernel precomputes from ``edge_index`` (an :class:`~hierloss.HBCELoss` keeps it in buffers).

    Attributes:
        incidence: ``(E, C)`` float32 signed incidence (``+1`` at each edge's child, ``−1`` at its parent) for the
            ``'dense'`` layout, or ``None`` when it would not be chosen (it is built on demand then).
        order: ``(2E,)`` long: the entries of ``cat(parents, children)`` sorted (stably) by label.
        offsets: ``(C,)`` long: label ``c``'s entries are ``order[offsets[c]:offsets[c + 1]]``.
    """

    incidence: Tensor | None
    order: Tensor
    offsets: Tensor


def _incidence(edge_index: Tensor, num_labels: int, dtype: torch.dtype) -> Tensor:
    inc = torch.zeros(edge_index.shape[1], num_labels, dtype=dtype, device=edge_index.device)
    return inc.scatter_(1, edge_index[1].unsqueeze(1), 1.0).scatter_(1, edge_index[0].unsqueeze(1), -1.0)


def edge_plan(edge_index: Tensor, num_labels: int, dense: bool | None = None) -> EdgePlan:
    """Build the :class:`EdgePlan` of ``edge_index``; ``dense=None`` includes the incidence when the default
    difference form would use it. Counts come from ``index_add_`` and a cumulative sum: nothing is read back."""
    num_edges = edge_index.shape[1]
    if dense is None:
        dense = 0 < num_edges * num_labels <= DENSE_MAX_ENTRIES
    index = edge_index.reshape(-1)
    order = torch.argsort(index, stable=True)
    counts = torch.zeros(num_labels, dtype=torch.long, device=index.device).index_add_(0, index,
                                                                                        torch.ones_like(index))
    incidence = _incidence(edge_index, num_labels, torch.float32) if dense else None
    return EdgePlan(incidence, order, torch.cumsum(counts, 0) - counts)


# ---------------------------------------------------------------------------------------------------- reference
def hbce_reference(x: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None, edge_index: Tensor,
                   weight: Tensor, form: PenaltyForm, threshold: float, temperature: float,
                   from_logits: bool) -> Tensor:
    """Per-sample HBCE ``(N,)`` in plain PyTorch: the masked mean BCE of each row plus ``Σ_e weight_e ·
    penalty_e``. ``y`` is the cleaned target, ``valid`` a 0/1 float mask (``None``: all valid), ``weight`` the
    effective edge weights (λ and the edge reduction included). Probabilities (``from_logits=False``) are clipped to
    ``[1e-7, 1 − 1e-7]`` inside the BCE, as the reference did."""
    if from_logits:
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pos_weight)
    else:
        p = x.clamp(CLIP, 1 - CLIP)
        bce = -(torch.log(p) * (y if pos_weight is None else y * pos_weight) + (1 - y) * torch.log(1 - p))
    bce_mean = bce.mean(1) if valid is None else (bce * valid).sum(1) / valid.sum(1).clamp_min(1)
    v = penalty_space(x, form, from_logits)
    return bce_mean + edge_penalty(v, edge_index, weight, form, threshold, temperature)


# ---------------------------------------------------------------------------------------------------- CPU tuning
#: Group size of :func:`_softplus_sum`: a product of 32 factors in ``(1, 2]`` stays below ``2**32``.
_PRODUCT_GROUP = 32
#: Fewest elements for which :func:`_softplus_sum` takes the product form (below, its extra small ops cost more
#: than they save).
_PRODUCT_MIN_ELEMENTS = 32768
_LOG2_E = 1.0 / math.log(2.0)
#: Rows shorter than this are summed by :func:`_row_sums` as a matrix-vector product.
_MV_MAX_LABELS = 128


def _softplus_sum(x: Tensor, tuned: bool) -> Tensor:
    """``softplus(x).sum()`` as a 0-dim tensor; ``tuned`` (eager CPU) and large: with 32x fewer logarithms.

    ``softplus(x) = max(x, 0) + log(1 + e^(−|x|))`` and a sum of logarithms is the logarithm of a product: the
    factors ``1 + e^(−|x|)`` lie in ``(1, 2]``, so products of :data:`_PRODUCT_GROUP` of them neither overflow nor
    underflow, and one logarithm per group is taken (the CPU's ``log`` costs several times a vectorised ``exp2``).
    The error per element is at most about one ulp of 1, the order of the rounding of ``softplus(x) − x·y``.
    """
    if not tuned or x.numel() < _PRODUCT_MIN_ELEMENTS:
        return F.softplus(x).sum()
    flat = x.reshape(-1)
    factors = torch.exp2(flat.abs().mul_(-_LOG2_E)).add_(1.0)  # 1 + e^(−|x|)
    whole = flat.numel() // _PRODUCT_GROUP * _PRODUCT_GROUP
    logs = torch.log(factors[:whole].view(_PRODUCT_GROUP, -1).prod(0)).sum()
    if whole < flat.numel():
        logs = logs + torch.log(factors[whole:]).sum()
    return flat.relu().sum().add_(logs)


def _row_sums(matrix: Tensor, tuned: bool) -> Tensor:
    """``matrix.sum(1)`` of an ``(N, C)`` matrix; ``tuned`` with short rows: ``matrix @ 1``."""
    if tuned and matrix.shape[1] < _MV_MAX_LABELS:
        return torch.mv(matrix, matrix.new_ones(matrix.shape[1]))
    return matrix.sum(1)


def _cpu_target_mask(target: Tensor, ignore_index: float | None, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """:func:`~hierloss._masking.target_mask` for eager CPU: ``None`` for a target found NaN-free by one sum, and
    a float mask written by the comparisons (``torch.eq(..., out=)``) when the target already has ``dtype``."""
    if target.dtype != dtype:
        clean, valid = target_mask(target, ignore_index, nan_shortcut=True)
        return clean, None if valid is None else valid.to(dtype)
    clean, mask = target, None
    if not nan_free_on_cpu(target):
        mask = torch.eq(target, target, out=torch.empty_like(target))  # 0 exactly at NaN
        clean = torch.nan_to_num(target, nan=0.0)
    if ignore_index is not None:
        keep = torch.ne(target, ignore_index, out=torch.empty_like(target))
        mask = keep if mask is None else mask.mul_(keep)
        clean = clean * keep
    return clean, mask


# ---------------------------------------------------------------------------------------------------- the kernel
def hbce(x: Tensor, target: Tensor, ignore_index: float | None, pos_weight: Tensor | None, edge_index: Tensor,
         weight: Tensor, weight_scale: float, form: PenaltyForm, threshold: float, temperature: float,
         reduction: str, from_logits: bool, plan: EdgePlan | None) -> tuple[Tensor, bool]:
    """HBCE of ``x`` (float32/64 logits or probabilities) on the chosen backend.

    ``weight`` holds ``w_e`` in ``x``'s dtype and ``weight_scale`` the factor λ (divided by ``E`` for the mean over
    edges). Returns ``(loss, reduced)``: the ``reduction`` already applied (``reduced=True``) or the ``(N,)``
    per-sample losses for the caller to reduce.
    """
    backend = select_backend(x, from_logits)
    tuned = backend == "fused_cpu"
    if tuned:
        clean, valid = _cpu_target_mask(target, ignore_index, x.dtype)
    else:
        clean, mask = target_mask(target, ignore_index, nan_shortcut=False)
        valid = None if mask is None else mask.to(x.dtype)
    y = clean.to(x.dtype)
    if backend == "reference":
        return hbce_reference(x, y, valid, pos_weight, edge_index, weight * weight_scale, form, threshold,
                              temperature, from_logits), False
    num_edges, num_labels = edge_index.shape[1], x.shape[1]
    layout = select_layout(form, num_edges, num_labels)
    incidence = order = offsets = None
    if layout == "dense":
        incidence = plan.incidence if plan is not None else None
        incidence = _incidence(edge_index, num_labels, x.dtype) if incidence is None else incidence.to(x.dtype)
    elif form.is_difference and num_edges:  # the gradient's scatter: one bag of edges per label
        _, order, offsets = plan if plan is not None else edge_plan(edge_index, num_labels, dense=False)
    out = _FusedHBCE.apply(  # type: ignore[no-untyped-call]
        x, y, valid, pos_weight, edge_index.reshape(-1), weight, incidence, order, offsets, weight_scale, form.name,
        float(threshold), float(temperature), reduction, tuned)
    return out, valid is None and reduction != "none"


class _FusedHBCE(torch.autograd.Function):
    """HBCE from logits with an analytic backward: per sample, or the reduction over samples directly.

    BCE is ``softplus(x) − x·y`` (or PyTorch's BCE-with-logits when ``pos_weight`` is given); its gradient
    ``σ(x) − y`` is written directly. Penalty values and derivatives come from the form (``v`` is the logits for a
    logit form, else the probabilities, with the chain-rule factor ``σ'(x) = s − s²``). With nothing masked and
    ``reduction`` ``'mean'`` or ``'sum'`` the loss is one total: ``(Σ softplus(x) − x·y) / C`` plus
    ``Σ_e w_e Σ_n penalty`` (then ``/ N`` for ``'mean'``), which avoids a per-row mean of short rows; otherwise the
    ``(N,)`` per-sample losses are returned. ``incidence`` given selects the ``'dense'`` layout. Gradients flow to
    ``x`` only; with ``create_graph=True`` the backward differentiates :func:`hbce_reference` instead, so that the
    gradient itself has a graph.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None, index: Tensor,
                weight: Tensor, incidence: Tensor | None, order: Tensor | None, offsets: Tensor | None,
                weight_scale: float,
                mode: str, threshold: float, temperature: float, reduction: str, tuned: bool) -> Tensor:
        form = FORMS[mode]
        num_samples, num_labels = x.shape
        num_edges = weight.shape[0]
        total = valid is None and reduction != "none"
        count = None
        if total:
            if pos_weight is None:
                out = _softplus_sum(x, tuned).sub_(torch.dot(x.reshape(-1), y.reshape(-1)))
            else:
                out = F.binary_cross_entropy_with_logits(x, y, reduction="sum", pos_weight=pos_weight)
        else:
            if pos_weight is None:
                bce = torch.addcmul(F.softplus(x), x, y, value=-1)
            else:
                bce = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pos_weight)
            if valid is None:
                out = _row_sums(bce, tuned).div_(num_labels)  # an empty row gives NaN, as mean(1)
            else:
                count = _row_sums(valid, tuned).clamp_min_(1)
                out = _row_sums(bce.mul_(valid), tuned).div_(count)
        s = None if form.space == "logits" else torch.sigmoid(x)
        v = x if s is None else s
        aux: tuple[Tensor, ...] = ()
        terms: Tensor | None = None  # (E, N)
        if num_edges and incidence is not None:  # every gap in one product: (E, C) @ (C, N)
            gap = torch.mm(incidence, v.t()).relu_()
            terms, aux = form.gap(gap), (gap,)  # type: ignore[misc]
        elif num_edges and form.is_difference:  # one bag ((child, +1), (parent, −1)) per edge, over rows of v
            ones = weight.new_ones(num_edges)
            pairs = torch.stack([index[num_edges:], index[:num_edges]], 1)
            gap = F.embedding_bag(pairs, v.t().contiguous(), per_sample_weights=torch.stack([ones, -ones], 1),
                                  mode="sum").relu_()
            terms, aux = form.gap(gap), (gap,)  # type: ignore[misc]
        elif num_edges:
            gathered = v.t().contiguous().index_select(0, index)  # (2E, N): parents, then children
            v_parent, v_child = gathered[:num_edges], gathered[num_edges:]
            if ctx.needs_input_grad[0]:  # the partials share the value's intermediates: keep them for backward
                terms, partials = form.value_and_partials(v_parent, v_child, threshold, temperature)
                aux = () if partials is None else partials
            else:
                terms = form.value(v_parent, v_child, threshold, temperature)
        if terms is not None:
            if total:  # C·Σ_e w_e Σ_n terms, added to the BCE sum before the division by C
                out = torch.add(out, torch.dot(terms.sum(1), weight), alpha=num_labels * weight_scale)
            else:
                out = torch.addmv(out, terms.t(), weight, alpha=weight_scale)
        if total:
            out = out.div_(num_labels * num_samples if reduction == "mean" else num_labels)  # empty batch: NaN
        ctx.mode, ctx.threshold, ctx.temperature = mode, threshold, temperature
        ctx.weight_scale, ctx.reduction, ctx.total = weight_scale, reduction, total
        optional = (valid, pos_weight, count, incidence, order, offsets, s)
        ctx.present = tuple(t is not None for t in optional)
        ctx.save_for_backward(x, y, index, weight, *(t for t in optional if t is not None), *aux)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        x, y, index, weight = saved[:4]
        k = 4  # optional tensors follow in save order (indexing, not list.pop: Dynamo traces tuples only)
        optional: list[Tensor | None] = []
        for present in ctx.present:
            optional.append(saved[k] if present else None)
            k += int(present)
        valid, pos_weight, count, incidence, order, offsets, s = optional
        aux = saved[k:]
        none = (None,) * 14
        form = FORMS[ctx.mode]
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference so that the gradient has a graph
            return (_reference_grad(ctx, grad_out, x, y, valid, pos_weight, index, weight), *none)
        num_samples, num_labels = x.shape
        num_edges = weight.shape[0]
        sig = torch.sigmoid(x) if s is None else s
        if pos_weight is None:
            dbce = sig.sub_(y) if s is None else sig - y  # s itself is still needed below
        else:  # pw·y·(s − 1) + (1 − y)·s = s·(1 + (pw − 1)·y) − pw·y
            dbce = torch.addcmul(sig, sig, y * (pos_weight - 1)).sub_(y * pos_weight)
        if valid is not None:
            dbce.mul_(valid)
        # grad = g ⊙ (dbce / count + P), P the penalty's gradient. With nothing masked count = C in every row, and
        # grad = (g / C) ⊙ (dbce + C·P): C goes into the penalty's scale and saves a pass over (N, C).
        if count is None:
            if ctx.reduction == "none":
                factor = (grad_out / num_labels).unsqueeze(1)
            else:
                factor = grad_out / (num_labels * num_samples if ctx.reduction == "mean" else num_labels)
            pen_scale = ctx.weight_scale * num_labels
        else:
            dbce.div_(count.unsqueeze(1))
            factor, pen_scale = grad_out.unsqueeze(1), ctx.weight_scale
        if not form.has_gradient or num_edges == 0:
            return (dbce.mul_(factor), *none)
        if incidence is not None:  # dense: one product back to (N, C)
            slope = form.slope(aux[0])  # type: ignore[misc]  # (E, N)
            weighted = incidence * weight.unsqueeze(1)  # (E, C)
            if s is None:
                dbce.addmm_(slope.t(), weighted, alpha=pen_scale)
            else:
                dbce.add_(torch.mm(slope.t(), weighted).mul_(torch.addcmul(s, s, s, value=-1)), alpha=pen_scale)
            return (dbce.mul_(factor), *none)
        if form.is_difference:  # per label, one bag of its edges' slopes: +w_e where it is the child, −w_e the parent
            assert order is not None and offsets is not None and form.slope is not None
            slope = form.slope(aux[0])  # (E, N)
            rows = torch.remainder(order, num_edges)  # the edge of each (label, edge) incidence
            signed = torch.cat([weight * -pen_scale, weight * pen_scale]).index_select(0, order)
            d_vt = F.embedding_bag(rows, slope, offsets, per_sample_weights=signed, mode="sum")  # (C, N)
        else:  # the pair form's partial derivatives, from the forward
            d_parent, d_child = aux
            w = weight.unsqueeze(1) * pen_scale
            d_vt = torch.zeros(num_labels, num_samples, dtype=x.dtype, device=x.device)
            d_vt.index_add_(0, index[:num_edges], d_parent * w).index_add_(0, index[num_edges:], d_child * w)
        d_v = d_vt.t().contiguous()  # one transposing copy; the adds below are then contiguous
        if s is not None:  # · σ'(x) = s − s²
            d_v.mul_(torch.addcmul(s, s, s, value=-1))
        return (dbce.add_(d_v).mul_(factor), *none)


def _reference_grad(ctx: Any, grad_out: Tensor, x: Tensor, y: Tensor, valid: Tensor | None,
                    pos_weight: Tensor | None, index: Tensor, weight: Tensor) -> Tensor:
    """The gradient of :func:`hbce_reference` with respect to ``x``, with a graph (for ``create_graph=True``)."""
    per_sample = hbce_reference(x, y, valid, pos_weight, index.view(2, -1), weight * ctx.weight_scale, FORMS[ctx.mode],
                                ctx.threshold, ctx.temperature, True)
    if ctx.total:
        per_sample = per_sample.mean() if ctx.reduction == "mean" else per_sample.sum()
    (grad,) = torch.autograd.grad(per_sample, x, grad_out, create_graph=True)
    return grad
