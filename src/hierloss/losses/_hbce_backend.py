"""How HBCE is computed: the plain-PyTorch reference, the fused kernel, its CPU tuning, and the rule choosing them.

:func:`hierloss.losses.hbce.hbce_loss` states *what* the loss is; this module decides *how* it runs. There are three
backends, all computing the same numbers (``tests/losses/test_hbce_backend.py`` holds them to each other):

``'reference'``
    Plain PyTorch: BCE per element, its masked mean per sample, plus ``Σ_e w_e · penalty_e`` from the penalty
    forms' values (:mod:`hierloss._penalty_forms`); autograd differentiates it, to any order.
``'fused'``
    One ``torch.autograd.Function`` with an analytic backward (and forward-mode rule) that writes the BCE
    gradients, with respect to the input and to a target that requires grad, and the penalty forms' derivatives
    directly. This is exactly what a CUDA tensor (or any accelerator, or ``torch.compile``) runs: element-wise
    ops, matrix products and gathers only, nothing read back to the host.
``'fused_cpu'``
    The same Function with CPU shortcuts switched on (eager mode on the CPU only, where they were measured to pay;
    see ``docs/benchmarks.md``): ``Σ BCE`` of a large batch with one logarithm per 32 elements
    (:func:`_bce_sum_products`), row sums of short rows as matrix-vector products (:func:`_row_sums`), a target
    found NaN-free (by the value checks, or one host-side sum) so that nothing is masked, and masks written as
    floats by the comparisons themselves (:func:`_cpu_target_mask`). The shortcuts that read values are skipped for
    a target batched by ``torch.func.vmap``.

The fused kernel reads the edges in one of two layouts: ``'dense'``, a signed ``(E, C)`` incidence matrix, so
that every gap ``v_child − v_parent`` of a batch is one matrix product and the gradient another (difference forms on
small hierarchies); or ``'gather'``, rows of a ``(C, N)`` copy of the values gathered per edge and scattered back
(``embedding_bag`` for the difference forms, in blocks of samples so that the backward's temporaries stay a
fraction of the input's size; ``index_select`` / ``index_add`` for the pair forms).

Under ``torch.func`` transforms the Function has ``setup_context``, a vmap rule generated from its own code and a
``jvp``, so ``torch.func.grad``, ``jvp``, ``vmap(grad(...))`` (per-sample gradients) and ``torch.autograd``'s
forward mode work on every backend.

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

from hierloss._masking import nan_free_on_cpu, target_mask
from hierloss._penalty_forms import CLIP, FORMS, PenaltyForm, PenaltySettings, edge_penalty, penalty_space
from hierloss._validation import values_readable

__all__ = ["BACKENDS", "DENSE_MAX_ENTRIES", "LAYOUTS", "EdgePlan", "edge_plan", "hbce", "hbce_backend",
           "hbce_reference", "select_backend", "select_layout"]

BACKENDS: tuple[str, ...] = ("reference", "fused", "fused_cpu")
LAYOUTS: tuple[str, ...] = ("dense", "gather")

#: Largest ``E·C`` for which difference forms use the ``'dense'`` layout (its products cost ``N·E·C``
#: multiply-adds; the measurements behind this number are in ``docs/benchmarks.md``).
DENSE_MAX_ENTRIES = 2048
#: The ``'gather'`` layout's backward works on blocks of samples once ``N·E`` reaches this many entries, in
#: :data:`_BLOCKS` blocks, so that its ``(E, n)`` and ``(C, n)`` temporaries stay a fraction of the input's size.
_BLOCK_MIN_ENTRIES = 1 << 20
_BLOCKS = 8

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
    3. a CPU tensor in eager mode (``torch.func`` transforms included): ``'fused_cpu'``;
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
    eager_cpu = x.is_cpu and not torch.compiler.is_compiling()
    if forced == "fused_cpu" and not eager_cpu:
        raise ValueError("the 'fused_cpu' HBCE backend runs only on CPU tensors in eager mode; use 'fused' for "
                         f"{x.device.type} tensors and under torch.compile")
    if forced is not None:
        return forced
    return "fused_cpu" if eager_cpu else "fused"


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
        flat_index: ``(2E,)`` long: ``edge_index`` flattened (parents, then children).
        cache: the incidence with the edge weights folded in (see :func:`_weighted_incidence`), kept between calls
            while the weights tensor and its contents stay the same.
    """

    incidence: Tensor | None
    order: Tensor
    offsets: Tensor
    flat_index: Tensor
    cache: dict[str, Any] | None = None


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
    return EdgePlan(incidence, order, torch.cumsum(counts, 0) - counts, index, {})


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
#: Group size of :func:`_bce_sum_products`: a product of 32 factors in ``(1, 2]`` stays below ``2**32``.
_PRODUCT_GROUP = 32
#: Fewest elements for which :func:`_bce_sum` takes the product form (below, PyTorch's own BCE is faster).
_PRODUCT_MIN_ELEMENTS = 40000
_LOG2_E = 1.0 / math.log(2.0)
#: Rows shorter than this are summed by :func:`_row_sums` as a matrix-vector product.
_MV_MAX_LABELS = 128


def _bce_sum(x: Tensor, y: Tensor, pos_weight: Tensor | None, tuned: bool) -> Tensor:
    """``Σ BCE(x, y)`` as a 0-dim tensor: PyTorch's own BCE summed, or, ``tuned`` (eager CPU) on a large batch
    without ``pos_weight``, :func:`_bce_sum_products`. Either is as accurate as BCE's own value."""
    if pos_weight is not None or not tuned or x.numel() < _PRODUCT_MIN_ELEMENTS:
        return F.binary_cross_entropy_with_logits(x, y, reduction="sum", pos_weight=pos_weight)
    return _bce_sum_products(x, y)


def _bce_sum_products(x: Tensor, y: Tensor) -> Tensor:
    """``Σ BCE(x, y)`` with 32x fewer logarithms, and no cancellation.

    ``BCE = softplus(x) − x·y = (max(x, 0) − x·y) + log(1 + t)`` with ``t = e^(−|x|)``. The first part is summed
    element by element: it is ``>= 0`` for targets in ``[0, 1]`` (and exactly 0 for a confident, correct hard
    target), so no large sums cancel. The logarithms are summed as the logarithm of a product: pairs combine as
    ``(1 + a)(1 + b) − 1 = a + b + a·b``, computed on ``u = product − 1`` (so the small ``t`` of confident logits
    keep their precision, which ``1 + t`` in float32 would lose), in a tree over groups of
    :data:`_PRODUCT_GROUP`, and one ``log1p`` per group is taken. Every step adds non-negative numbers: the
    relative error is a few units in the last place.
    """
    flat, target = x.reshape(-1), y.reshape(-1)
    whole = flat.numel() // _PRODUCT_GROUP * _PRODUCT_GROUP
    t = flat.abs().mul_(-_LOG2_E).exp2_()  # e^(−|x|), in (0, 1]
    u = t[:whole].view(_PRODUCT_GROUP, -1)
    while u.shape[0] > 1:  # (1 + a)(1 + b) − 1, in place in the first half: a + a·b, then + b
        half = u.shape[0] // 2
        a, b = u[:half], u[half:]
        u = a.addcmul_(a, b).add_(b)
    logs = torch.log1p(u).sum()
    if whole < flat.numel():
        logs = logs + torch.log1p(t[whole:]).sum()
    return flat.relu().addcmul_(flat, target, value=-1).sum().add_(logs)


def _row_sums(matrix: Tensor, tuned: bool) -> Tensor:
    """``matrix.sum(1)`` of an ``(N, C)`` matrix; ``tuned`` with short rows: ``matrix @ 1``."""
    if tuned and matrix.shape[1] < _MV_MAX_LABELS:
        return torch.mv(matrix, matrix.new_ones(matrix.shape[1]))
    return matrix.sum(1)


def _cpu_target_mask(target: Tensor, ignore_index: float | None, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """:func:`~hierloss._masking.target_mask` for eager CPU: ``None`` for a target found NaN-free by one sum, and
    a float mask written by the comparisons (``torch.eq(..., out=)``) when the target already has ``dtype``."""
    if target.dtype != dtype or target.requires_grad:
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
def hbce(x: Tensor, target: Tensor, pos_weight: Tensor | None, edge_index: Tensor, weight: Tensor,
         settings: PenaltySettings, plan: EdgePlan | None = None, target_clean: bool = False) -> tuple[Tensor, bool]:
    """HBCE of ``x`` (float32/64 logits or probabilities) on the chosen backend.

    ``weight`` holds ``w_e`` in ``x``'s dtype; ``settings`` the checked hyper-parameters (λ, the form, the
    reductions, ``ignore_index``); ``plan`` the module's precomputed :class:`EdgePlan` (``None``: built here when
    needed). ``target_clean`` says that the value checks found nothing to mask in ``target`` (every value in
    ``[0, 1]``); the CPU shortcuts then skip their own NaN test. Returns ``(loss, reduced)``: the reduction already
    applied (``reduced=True``) or the ``(N,)`` per-sample losses for the caller to reduce.
    """
    form, reduction = settings.form, settings.reduction
    num_edges, num_labels = edge_index.shape[1], x.shape[1]
    weight_scale = settings.edge_scale(num_edges)
    backend = select_backend(x, settings.from_logits)
    tuned = backend == "fused_cpu"
    if tuned and target_clean:
        y, valid = target, None
    elif tuned and values_readable(target):
        y, valid = _cpu_target_mask(target, settings.ignore_index, x.dtype)
    else:
        y, mask = target_mask(target, settings.ignore_index, nan_shortcut=False)
        valid = None if mask is None else mask.to(x.dtype)
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    if backend == "reference":
        return hbce_reference(x, y, valid, pos_weight, edge_index, weight * weight_scale, form, settings.threshold,
                              settings.temperature, settings.from_logits), False
    layout = select_layout(form, num_edges, num_labels)
    index = edge_index.view(-1) if plan is None else plan.flat_index
    extra: tuple[Tensor | None, Tensor | None] = (None, None)
    if layout == "dense":
        incidence = None if plan is None else plan.incidence
        if incidence is None:
            incidence = _incidence(edge_index, num_labels, x.dtype)
        elif incidence.dtype != x.dtype:
            incidence = incidence.to(x.dtype)
        cache = None if plan is None or torch.compiler.is_compiling() else plan.cache  # no state in a traced graph
        extra = (_weighted_incidence(incidence, weight, form, cache), None)
    elif form.is_difference and num_edges and not _transforms_active():  # the gradient's scatter: a bag per label
        _, order, offsets, _, _ = plan if plan is not None else edge_plan(edge_index, num_labels, dense=False)
        extra = (order, offsets)  # (under vmap, where embedding_bag has no batching rule, the pair forms' gather)
    total = valid is None and reduction != "none"
    config = _Config(form.name, weight_scale, settings.threshold, settings.temperature, reduction, tuned, total,
                     layout == "dense")
    if torch.compiler.is_compiling():
        out = _FusedHBCETraced.apply(x, y, valid, pos_weight, index, weight, *extra, config)  # type: ignore
        return out[0], total
    if _transforms_active():
        out = _FusedHBCETransformable.apply(x, y, valid, pos_weight, index, weight, *extra, config)  # type: ignore
        return out[0], total
    return _FusedHBCE.apply(x, y, valid, pos_weight, (index, weight, *extra), config), total  # type: ignore


def _weighted_incidence(incidence: Tensor, weight: Tensor, form: PenaltyForm, cache: dict[str, Any] | None) -> Tensor:
    """The ``'dense'`` layout's matrix: the incidence with edge ``e``'s row times ``w_e**(1/k)`` (``k`` the form's
    degree), so that its gaps are the weighted ones, ``f(w**(1/k) · h) = w · f(h)``. Kept in ``cache`` (a module's
    plan) while ``weight`` is the same tensor, unchanged in place (its version), in the same dtype."""
    key = (weight._version, incidence.dtype, form.degree)
    if cache is not None and cache.get("weight") is weight and cache.get("key") == key:
        return cache["value"]  # type: ignore[no-any-return]
    folded = weight if form.degree == 1 else weight.pow(1.0 / form.degree)  # type: ignore[operator]
    value = incidence * folded.unsqueeze(1)
    if cache is not None:
        cache.update(weight=weight, key=key, value=value)
    return value


def _transforms_active() -> bool:
    """Whether a ``torch.func`` transform is active: the Function with ``setup_context`` runs then (the eager one
    skips ``Function.apply``'s per-call signature binding, a measurable cost on small batches)."""
    try:
        return bool(torch._C._are_functorch_transforms_active())
    except AttributeError:  # pragma: no cover - a torch without functorch
        return True


class _Config(NamedTuple):
    """The fused kernel's settings, as plain Python values."""

    mode: str
    weight_scale: float  # λ, divided by E for the mean over edges
    threshold: float
    temperature: float
    reduction: str
    tuned: bool  # the CPU shortcuts
    total: bool  # nothing masked and 'mean' or 'sum': the forward returns the reduced total
    dense: bool  # the 'dense' layout: the extra edge tensor is the weighted incidence


def _blocks(num_samples: int, num_edges: int) -> list[tuple[int, int]]:
    """Sample ranges for the gather layout's backward: one block, or :data:`_BLOCKS` once ``N·E`` is large (never
    under ``torch.compile``, where the batch size may be symbolic)."""
    if num_samples * num_edges < _BLOCK_MIN_ENTRIES or torch.compiler.is_compiling():
        return [(0, num_samples)]
    step = -(-num_samples // _BLOCKS)
    return [(start, min(start + step, num_samples)) for start in range(0, num_samples, step)]


def _fused_forward(x: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
                   edges: tuple[Tensor | None, ...], config: _Config) -> tuple[Tensor, list[Tensor]]:
    """The loss and the intermediates the backward reads: ``(out, [[count], [σ(x)], *penalty])``.

    ``edges`` is ``(index (2E,), weight (E,), a, b)``: ``a`` the weighted incidence in the ``'dense'`` layout,
    ``(a, b)`` the bag order and offsets of a difference form in the ``'gather'`` layout (``embedding_bag``), else
    ``None`` (parents and children gathered with ``index_select``, as for pair forms). BCE is
    PyTorch's BCE-with-logits (or :func:`_bce_sum_products`), so the value is BCE's to rounding. With nothing masked
    and ``reduction`` ``'mean'`` or ``'sum'`` the loss is one total (BCE's mean, or ``Σ BCE / C``, plus the
    penalty's sum scaled), which avoids a per-row mean of short rows; otherwise the ``(N,)`` per-sample losses.
    ``penalty`` is the clamped (weighted, in the dense layout) gaps of a difference form, ``(N, E)`` dense or
    ``(E, N)`` gathered, the two partial derivatives from the ``index_select`` path (when the form has a gradient),
    or nothing.
    """
    form = FORMS[config.mode]
    num_samples, num_labels = x.shape
    index, weight = edges[0], edges[1]
    num_edges = weight.shape[0]  # type: ignore[union-attr]
    saved: list[Tensor] = []
    if valid is not None:
        count = _row_sums(valid, config.tuned).clamp_min_(1)
        saved.append(count)
    s = None if form.space == "logits" else torch.sigmoid(x)
    if s is not None and config.dense:
        saved.append(s)
    v = x if s is None else s
    # the penalty: (E,) or (N,) sums of the terms, weighted when the weights were not folded in
    penalty: Tensor | None = None
    if num_edges and config.dense:  # every weighted gap in one product: (N, C) @ (C, E)
        gap = F.linear(v, edges[2]).relu_()  # type: ignore[arg-type]
        terms = form.gap(gap)  # type: ignore[misc]
        saved.append(gap)
        penalty = terms.sum() if config.total else _row_sums(terms, config.tuned)
    elif num_edges and edges[2] is not None:  # difference form: one bag ((child, +1), (parent, −1)) per edge
        ones = weight.new_ones(num_edges)  # type: ignore[union-attr]
        pairs = torch.stack([index[num_edges:], index[:num_edges]], 1)  # type: ignore[index]
        rows = v.t().contiguous()
        del s, v  # only the (C, N) copy is needed now
        gap = F.embedding_bag(pairs, rows, per_sample_weights=torch.stack([ones, -ones], 1), mode="sum").relu_()
        del rows
        terms = form.gap(gap)  # type: ignore[misc]
        saved.append(gap)
        penalty = torch.dot(terms.sum(1), weight) if config.total else torch.mv(terms.t(), weight)  # type: ignore
    elif num_edges:
        gathered = v.t().contiguous().index_select(0, index)  # type: ignore[arg-type]  # (2E, N)
        v_parent, v_child = gathered[:num_edges], gathered[num_edges:]
        # the partials share the value's intermediates: keep them for the backward
        terms, partials = form.value_and_partials(v_parent, v_child, config.threshold, config.temperature)
        if partials is not None:
            saved.extend(partials)
        penalty = torch.dot(terms.sum(1), weight) if config.total else torch.mv(terms.t(), weight)  # type: ignore
    if config.total:
        if config.reduction == "mean" and not (config.tuned and x.numel() >= _PRODUCT_MIN_ELEMENTS
                                               and pos_weight is None):
            out = F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight)  # the mean of the rows' means
            if penalty is not None:
                out = torch.add(out, penalty, alpha=config.weight_scale / max(num_samples, 1))
            return out, saved
        out = _bce_sum(x, y, pos_weight, config.tuned)
        if penalty is not None:
            out = torch.add(out, penalty, alpha=num_labels * config.weight_scale)
        return out.div_(num_labels * num_samples if config.reduction == "mean" else num_labels), saved
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pos_weight)
    if valid is None:
        out = _row_sums(bce, config.tuned).div_(num_labels)  # an empty row gives NaN, as mean(1)
    else:
        out = _row_sums(bce.mul_(valid), config.tuned).div_(saved[0])
    if penalty is not None:
        out = out.add_(penalty, alpha=config.weight_scale)
    return out, saved


def _save(ctx: Any, x: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
          edges: tuple[Tensor | None, ...], config: _Config, out: Tensor,
          intermediates: tuple[Tensor, ...] | list[Tensor], num_outputs: int) -> None:
    """Keep what the backward and the forward-mode rule read: the inputs (``None`` where absent), then the
    intermediates."""
    ctx.config, ctx.num_outputs, ctx.out_shape = config, num_outputs, out.shape
    ctx.save_for_backward(x, y, valid, pos_weight, *edges, *intermediates)
    if num_outputs > 1 or _forward_ad_level() >= 0:
        ctx.save_for_forward(x, y, valid, pos_weight, *edges, *intermediates)


def _forward_ad_level() -> int:
    """The innermost ``torch.autograd.forward_ad`` dual level (``-1``: forward mode is off)."""
    level = getattr(torch.autograd.forward_ad, "_current_level", 0)
    return level if isinstance(level, int) else 0


class _Saved(NamedTuple):
    x: Tensor
    y: Tensor
    valid: Tensor | None
    pos_weight: Tensor | None
    flat_index: Tensor
    weight: Tensor
    extra: tuple[Tensor | None, Tensor | None]  # the weighted incidence, or the bag order and offsets
    row_count: Tensor | None
    s: Tensor | None
    penalty: tuple[Tensor, ...]


def _unpack(ctx: Any) -> _Saved:
    x, y, valid, pos_weight, index, weight, extra_a, extra_b, *rest = ctx.saved_tensors
    count = s = None
    if valid is not None:
        count, rest = rest[0], rest[1:]
    if ctx.config.dense and FORMS[ctx.config.mode].space == "probabilities":
        s, rest = rest[0], rest[1:]
    return _Saved(x, y, valid, pos_weight, index, weight, (extra_a, extra_b), count, s, tuple(rest))


def _factors(saved: _Saved, grad_out: Tensor, config: _Config) -> tuple[Tensor | float, float]:
    """``(factor, penalty scale)``: the loss's gradient is ``factor ⊙ (∂BCE (masked) + scale · P)`` with ``P`` the
    penalty's gradient per unit weight. With nothing masked ``count = C`` in every row and the ``1/C`` goes into
    the factor; masked rows divide the BCE part by their own count beforehand (the caller does). The one total's
    factor is a Python number on eager CPU (read back for free there), a tensor elsewhere."""
    num_samples, num_labels = saved.x.shape
    if saved.row_count is not None:
        return grad_out.unsqueeze(1), config.weight_scale
    pen_scale = config.weight_scale * num_labels
    if not config.total:
        return (grad_out / num_labels).unsqueeze(1), pen_scale
    divisor = num_labels * num_samples if config.reduction == "mean" else num_labels
    if config.tuned and divisor and not grad_out.requires_grad and (not _transforms_active()
                                                                    or values_readable(grad_out)):
        return float(grad_out) / divisor, pen_scale
    return grad_out / divisor, pen_scale


def _target_grad(saved: _Saved, factor: Tensor | float) -> Tensor:
    """∂loss/∂target: per element ``−x`` (``pw·softplus(−x) − softplus(x)`` with ``pos_weight``), masked,
    divided by the row's count, times the upstream factor: BCEWithLogitsLoss's gradient with respect to its
    target."""
    x, pos_weight = saved.x, saved.pos_weight
    d = -x if pos_weight is None else torch.sub(F.softplus(-x) * pos_weight, F.softplus(x))
    if saved.valid is not None:
        d = d * saved.valid / saved.row_count.unsqueeze(1)  # type: ignore[union-attr]
    return d * factor


def _bce_grad_(sig: Tensor, y: Tensor, pos_weight: Tensor | None, valid: Tensor | None,
               count: Tensor | None) -> Tensor:
    """∂BCE/∂x from ``sig = σ(x)``, in place: ``σ(x) − y`` (with ``pos_weight``: ``σ(x)·(1 + (pw − 1)·y) − pw·y``),
    masked and divided by the row's count. ``sig`` and the others may be the rows of a block of samples."""
    if pos_weight is not None:  # pw·y·(s − 1) + (1 − y)·s = s·(1 + (pw − 1)·y) − pw·y
        sig = sig.addcmul_(sig, y * (pos_weight - 1))
        y = y * pos_weight
    dbce = sig.sub_(y)
    if valid is not None:
        dbce = dbce.mul_(valid).div_(count.unsqueeze(1))  # type: ignore[union-attr]
    return dbce


def _input_grad(saved: _Saved, factor: Tensor | float, pen_scale: float, config: _Config) -> Tensor:
    """∂loss/∂input: ∂BCE/∂x (:func:`_bce_grad_`) plus the penalty's gradient, times the upstream factor."""
    x, y, pos_weight, valid, count, s = saved.x, saved.y, saved.pos_weight, saved.valid, saved.row_count, saved.s
    form = FORMS[config.mode]
    num_samples, num_labels = x.shape
    num_edges = saved.weight.shape[0]
    if not form.has_gradient or num_edges == 0:
        return _bce_grad_(torch.sigmoid(x), y, pos_weight, valid, count).mul_(factor)
    probabilities = form.space == "probabilities"
    if config.dense:  # one product back to (N, C): slope (N, E) @ weighted incidence (E, C)
        slope, weighted = form.slope(saved.penalty[0]), saved.extra[0]  # type: ignore[misc]
        if s is None:
            dbce = _bce_grad_(torch.sigmoid(x), y, pos_weight, valid, count)
            if isinstance(factor, float):  # the factor goes into the product's coefficients
                return dbce.addmm_(slope, weighted, beta=factor, alpha=pen_scale * factor)  # type: ignore[arg-type]
            return dbce.addmm_(slope, weighted, alpha=pen_scale).mul_(factor)  # type: ignore[arg-type]
        d_v = torch.mm(slope, weighted).mul_(torch.addcmul(s, s, s, value=-1))  # type: ignore[arg-type]  # · σ'(x)
        dbce = _bce_grad_(s.clone(), y, pos_weight, valid, count)  # s itself is a saved tensor
        return dbce.add_(d_v, alpha=pen_scale).mul_(factor)
    sig = torch.sigmoid(x)
    weight, index = saved.weight, saved.flat_index
    order, offsets = saved.extra
    if order is None:  # the partial derivatives from the forward, scattered back per label
        d_parent, d_child = saved.penalty
        w = weight.unsqueeze(1) * pen_scale
        d_vt = torch.zeros(num_labels, num_samples, dtype=x.dtype, device=x.device)
        d_vt = d_vt.index_add(0, index[:num_edges], d_parent * w).index_add_(0, index[num_edges:], d_child * w)
        d_v = d_vt.t().contiguous()  # one transposing copy; the products below are then contiguous
        if probabilities:  # · σ'(x) = s − s², before sig becomes the BCE gradient
            d_v = d_v.mul_(torch.addcmul(sig, sig, sig, value=-1))
        return _bce_grad_(sig, y, pos_weight, valid, count).add_(d_v).mul_(factor)
    # per label, one bag of its edges' slopes: +w_e where it is the child, −w_e the parent; in blocks of samples
    assert offsets is not None and form.slope is not None
    gap = saved.penalty[0]
    rows = torch.remainder(order, num_edges)  # the edge of each (label, edge) incidence
    signed = torch.cat([weight * -pen_scale, weight * pen_scale]).index_select(0, order)
    for start, stop in _blocks(num_samples, num_edges):
        slope = form.slope(gap[:, start:stop]).contiguous()  # (E, n)
        d_v = F.embedding_bag(rows, slope, offsets, per_sample_weights=signed, mode="sum").t()  # (n, C) view
        sb = sig[start:stop]
        if probabilities:  # · σ'(x) = s − s², before sig becomes the BCE gradient
            d_v = d_v * torch.addcmul(sb, sb, sb, value=-1)
        _bce_grad_(sb, y[start:stop], pos_weight, None if valid is None else valid[start:stop],
                   None if count is None else count[start:stop]).add_(d_v)
    return sig.mul_(factor)


def _grads(saved: _Saved, grad_out: Tensor, config: _Config, need_x: bool,
           need_y: bool) -> tuple[Tensor | None, Tensor | None]:
    """The analytic gradients with respect to the input and the target, for the upstream gradient ``grad_out``."""
    factor, pen_scale = _factors(saved, grad_out, config)
    grad_x = _input_grad(saved, factor, pen_scale, config) if need_x else None
    grad_y = _target_grad(saved, factor) if need_y else None
    return grad_x, grad_y


def _jvp(ctx: Any, x_tangent: Tensor | None, y_tangent: Tensor | None, *_: Any) -> Any:
    """Forward mode: the loss's tangent is ``Σ ∂loss/∂x · ẋ + ∂loss/∂y · ẏ`` (per row for per-sample losses, whose
    row ``n`` depends on row ``n`` only); the gradients are the backward's, for an upstream gradient of ones."""
    saved = _unpack(ctx)
    ones = torch.ones(ctx.out_shape, dtype=saved.x.dtype, device=saved.x.device)
    grad_x, grad_y = _grads(saved, ones, ctx.config, x_tangent is not None, y_tangent is not None)
    dims = None if ctx.config.total else 1
    tangent: Tensor | None = None
    for grad, dot in ((grad_x, x_tangent), (grad_y, y_tangent)):
        if grad is not None and dot is not None:
            term = (grad * dot).sum(dims)
            tangent = term if tangent is None else tangent + term
    if ctx.num_outputs == 1:
        return tangent
    return (tangent, *(None,) * (ctx.num_outputs - 1))


class _FusedHBCE(torch.autograd.Function):
    """HBCE from logits with an analytic backward and forward-mode rule (see :func:`_fused_forward`).

    Gradients flow to the input and to a target that requires grad (as with ``BCEWithLogitsLoss``); the penalty
    depends on the input only. With ``create_graph=True`` the backward differentiates :func:`hbce_reference`
    instead, so that the gradient itself has a graph. This is the eager form (``ctx`` in ``forward``, the edge
    tensors in one argument, the intermediates saved directly, one output); :class:`_FusedHBCETransformable` is the
    same kernel for ``torch.compile`` (and :class:`_FusedHBCETransformable` for ``torch.func`` transforms).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
                edges: tuple[Tensor | None, ...], config: _Config) -> Tensor:
        out, intermediates = _fused_forward(x, y, valid, pos_weight, edges, config)
        _save(ctx, x, y, valid, pos_weight, edges, config, out, intermediates, 1)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_x, grad_y = _backward(ctx, grad_out)
        return grad_x, grad_y, None, None, None, None

    jvp = staticmethod(_jvp)


class _FusedHBCETraced(torch.autograd.Function):
    """:class:`_FusedHBCE` for ``torch.compile``: ``setup_context``, every tensor an argument of its own, the
    intermediates returned as extra, non-differentiable outputs (Dynamo traces no custom ``jvp``)."""

    @staticmethod
    def forward(x: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None, index: Tensor,
                weight: Tensor, extra_a: Tensor | None, extra_b: Tensor | None, config: _Config) -> tuple[Tensor, ...]:
        out, intermediates = _fused_forward(x, y, valid, pos_weight, (index, weight, extra_a, extra_b), config)
        return (out, *intermediates)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        x, y, valid, pos_weight, index, weight, extra_a, extra_b, config = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        _save(ctx, x, y, valid, pos_weight, (index, weight, extra_a, extra_b), config, output[0], output[1:],
              len(output))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
        grad_x, grad_y = (None, None) if grad_out is None else _backward(ctx, grad_out)
        return grad_x, grad_y, None, None, None, None, None, None, None


class _FusedHBCETransformable(_FusedHBCETraced):
    """:class:`_FusedHBCETraced` with a vmap rule generated from its own code and the forward-mode rule, as
    ``torch.func`` transforms need."""

    generate_vmap_rule = True
    jvp = staticmethod(_jvp)


def _backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:
    need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    saved = _unpack(ctx)
    if torch.is_grad_enabled():  # create_graph=True: differentiate the reference so that the gradient has a graph
        return _reference_grad(ctx.config, grad_out, saved, need_x, need_y)
    return _grads(saved, grad_out, ctx.config, need_x, need_y)


def _reference_grad(config: _Config, grad_out: Tensor, saved: _Saved, need_x: bool,
                    need_y: bool) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of :func:`hbce_reference` with respect to ``x`` and ``y``, with a graph (for
    ``create_graph=True``)."""
    x, y = saved.x, saved.y
    per_sample = hbce_reference(x, y, saved.valid, saved.pos_weight, saved.flat_index.view(2, -1),
                                saved.weight * config.weight_scale, FORMS[config.mode], config.threshold,
                                config.temperature, True)
    if config.total:
        per_sample = per_sample.mean() if config.reduction == "mean" else per_sample.sum()
    wanted = [t for t, need in ((x, need_x), (y, need_y)) if need]
    grads = iter(torch.autograd.grad(per_sample, wanted, grad_out, create_graph=True, allow_unused=True))
    return (next(grads) if need_x else None), (next(grads) if need_y else None)
