"""Hierarchical binary cross-entropy (HBCE): BCE plus a penalty on hierarchy violations.

Per sample ``n``::

    loss_n = mean over (valid) labels of BCE(input_n, target_n)  +  Σ_e scale · w_e · penalty_e(p_n)

as in Asadi et al. (2025); ``mode='hard'`` with ``from_logits=False`` reproduces the authors' Keras loss exactly,
including its zero penalty gradient. The trainable modes give the penalty a gradient that raises the parent and
lowers the child on a violation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hierloss._autocast import autocast_disabled
from hierloss._masking import on_eager_cpu, target_mask
from hierloss._reduction import check_reduction, reduce_samples
from hierloss.hierarchy import Hierarchy
from hierloss.losses._edges import DIFFERENCE_MODES, check_penalty_args, resolve_edges, resolve_scale
from hierloss.losses.hierarchy_penalty import CLIP, DEFAULT_MODE, DEFAULT_TEMPERATURE, edge_terms, penalty_space

__all__ = ["HBCELoss", "hbce_loss"]


#: Largest ``E·C`` for which the difference modes read the edges with a dense ``(E, C)`` incidence matmul instead of
#: row gathers: at CheXpert size (420) one small GEMM each way beats the transposes and bags of the gather path
#: (2.2x vs 2.7x BCE at N = 4096 on one CPU thread); they break even near 2,000 and the GEMM's ``N·E·C``
#: multiply-adds lose beyond (3.3x vs 2.6x at ``E·C`` = 4,032).
DENSE_MAX_ENTRIES = 2048


def _incidence(edge_index: Tensor, num_labels: int, like: Tensor) -> Tensor:
    """``(E, C)`` signed incidence matrix: ``+1`` at each edge's child, ``−1`` at its parent (dtype of ``like``)."""
    inc = like.new_zeros(edge_index.shape[1], num_labels)
    return inc.scatter_(1, edge_index[1].unsqueeze(1), 1.0).scatter_(1, edge_index[0].unsqueeze(1), -1.0)


def _bag_plan(index: Tensor, num_labels: int) -> tuple[Tensor, Tensor]:
    """``(order, offsets)`` grouping the ``2E`` entries of ``index = cat(parents, children)`` by label.

    ``order`` sorts ``index`` (stably); label ``c``'s incidences are ``order[offsets[c]:offsets[c + 1]]``. Counts
    come from ``index_add_`` and a cumulative sum, so nothing is read back from an accelerator.
    """
    order = torch.argsort(index, stable=True)
    counts = torch.zeros(num_labels, dtype=torch.long, device=index.device).index_add_(0, index,
                                                                                        torch.ones_like(index))
    return order, torch.cumsum(counts, 0) - counts


#: Group size of :func:`_softplus_sum`: a product of 32 factors in ``(1, 2]`` stays below ``2**32``.
_PRODUCT_GROUP = 32
#: Fewest elements for which :func:`_softplus_sum` takes the product form: its ten small ops cost about 17 µs more
#: than ``softplus`` + ``sum`` and save about 0.6 ns per element (break-even near 27,000 on one CPU thread).
_PRODUCT_MIN_ELEMENTS = 32768
_LOG2_E = 1.0 / math.log(2.0)


def _softplus_sum(x: Tensor) -> Tensor:
    """``softplus(x).sum()`` as a 0-dim tensor; on the CPU in eager mode with 32x fewer logarithms.

    ``softplus(x) = max(x, 0) + log(1 + e^(−|x|))`` and a sum of logarithms is the logarithm of a product: the
    factors ``1 + e^(−|x|)`` lie in ``(1, 2]``, so products of :data:`_PRODUCT_GROUP` of them neither overflow
    nor underflow, and only one logarithm per group is taken. On the CPU the logarithm (and ``exp``) cost 3-5x a
    vectorised ``exp2``; this form measured 1.6-1.75x faster than ``softplus(x).sum()`` at (4096, 21) and
    (256, 4125) on one thread. The error per element is at most about one float32 ulp of 1 (the rounding of each
    factor), the same order as the rounding of ``softplus(x) − x·y`` itself. On accelerators and under
    ``torch.compile`` (where ``softplus`` and the sum fuse into one pass), and below
    :data:`_PRODUCT_MIN_ELEMENTS` elements, it is ``softplus(x).sum()``.
    """
    if x.numel() < _PRODUCT_MIN_ELEMENTS or not on_eager_cpu(x):
        return F.softplus(x).sum()
    flat = x.reshape(-1)
    factors = torch.exp2(flat.abs().mul_(-_LOG2_E)).add_(1.0)  # 1 + e^(−|x|)
    whole = flat.numel() // _PRODUCT_GROUP * _PRODUCT_GROUP
    logs = torch.log(factors[:whole].view(_PRODUCT_GROUP, -1).prod(0)).sum()
    if whole < flat.numel():
        logs = logs + torch.log(factors[whole:]).sum()
    return flat.relu().sum().add_(logs)


#: Below this many labels :func:`_row_sums` is a matrix-vector product: 1.8x faster than ``sum(1)`` at 21 labels
#: on one CPU thread, even at 64-128, and slower beyond (1.45x slower at 4,125).
_MV_MAX_LABELS = 128


def _row_sums(matrix: Tensor) -> Tensor:
    """``matrix.sum(1)`` for an ``(N, C)`` matrix, as ``matrix @ 1`` when rows are short."""
    if matrix.shape[1] < _MV_MAX_LABELS:
        return torch.mv(matrix, matrix.new_ones(matrix.shape[1]))
    return matrix.sum(1)


#: What :class:`HBCELoss` precomputes once: the dense incidence (``None`` above :data:`DENSE_MAX_ENTRIES`) and the
#: bag plan of :func:`_bag_plan`.
_Plan = tuple[Tensor | None, Tensor | None, Tensor | None]


class _FusedHBCE(torch.autograd.Function):
    """HBCE from logits with an analytic backward: per sample, or already summed / averaged over samples.

    The BCE is ``softplus(x) − x·y`` (PyTorch's ``binary_cross_entropy_with_logits`` with ``pos_weight``); its
    gradient ``σ(x) − y`` is written directly. The edges are read in one of two ways:

    * ``incidence`` given (the difference modes on small hierarchies): ``gap = incidence @ vᵀ`` is every
      ``v_child − v_parent`` in one GEMM, and the backward is one GEMM with the weighted incidence matrix,
      accumulated into the BCE gradient by ``addmm_``;
    * otherwise, rows of a ``(C, N)`` copy of ``v`` (each edge moves two contiguous rows, 3-5x faster than
      gathering columns of the ``(N, C)`` layout): for the difference modes one ``embedding_bag`` with bags
      ``((child, +1), (parent, −1))`` computes every gap, and another, with one bag per label of its signed,
      weighted edges, writes the gradient back (4-5x faster than ``index_select`` + ``sub`` and two
      ``index_add_`` at GO size); ``'soft'`` and ``'hard'`` gather ``cat(parents, children)`` with one
      ``index_select`` and scatter with ``index_add_``.

    ``v`` is the logits for ``'logit_hinge'`` (no sigmoid derivative in the backward) and the probabilities for
    the other modes. ``target`` arrives cleaned (NaN and ignored entries set to 0) and ``valid`` is a float 0/1
    mask of the targets that count (``None``: all). The effective edge weights are ``weight_scale · weight``
    (``weight_scale`` is λ, divided by ``E`` for ``edge_reduction='mean'``); the Python number goes into the
    ``alpha`` of the GEMMs instead of costing an op on the weights. Gradients flow to ``logits`` only.

    ``reduction`` ``'sum'`` / ``'mean'`` with nothing masked returns the 0-dim total directly: the BCE part is
    then one whole-tensor sum divided by ``C`` (every sample has ``C`` valid labels) instead of a mean per row of
    ``C`` values, which costs several times more on short rows. Otherwise the ``(N,)`` per-sample losses are
    returned and the caller reduces them.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
                index: Tensor, weight: Tensor, weight_scale: float, incidence: Tensor | None, order: Tensor | None,
                offsets: Tensor | None, mode: str, threshold: float, temperature: float, reduction: str) -> Tensor:
        num_samples, num_labels = logits.shape
        num_edges = weight.shape[0]
        total = valid is None and reduction != "none"  # return the reduction over samples, not per-sample values
        # BCE = softplus(x) − x·y: one transcendental pass, fewer than PyTorch's composite form. Summed over
        # everything it is Σ softplus(x) − x·y with the second sum a single dot product.
        count = None
        if total:
            if pos_weight is None:
                out = _softplus_sum(logits).sub_(torch.dot(logits.reshape(-1), target.reshape(-1)))
            else:
                out = F.binary_cross_entropy_with_logits(logits, target, reduction="sum", pos_weight=pos_weight)
        else:
            if pos_weight is None:
                bce = torch.addcmul(F.softplus(logits), logits, target, value=-1)
            else:
                bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pos_weight)
            if valid is None:
                out = _row_sums(bce).div_(num_labels)  # (a division: an empty row gives NaN, as mean(1))
            else:
                count = _row_sums(valid).clamp_min_(1)
                out = _row_sums(bce.mul_(valid)).div_(count)
        in_logits = mode == "logit_hinge"
        s = None if in_logits else torch.sigmoid(logits)
        v = logits if s is None else s
        aux: tuple[Tensor, ...] = ()
        terms: Tensor | None = None  # (E, N)
        if incidence is not None:  # difference modes, small hierarchy; (E, C) @ (C, N) is faster than (N, C) @ (C, E)
            gap = torch.mm(incidence, v.t()).relu_()  # (E, N): max(0, v_child − v_parent)
            terms = gap * gap if mode == "squared_hinge" else gap
            aux = (gap,)
        elif num_edges:
            vt = v.t().contiguous()  # (C, N)
            if mode in DIFFERENCE_MODES:  # one bag of (child, +1), (parent, −1) per edge: v_child − v_parent
                pairs = torch.stack([index[num_edges:], index[:num_edges]], 1)
                ones = weight.new_ones(num_edges).to(v.dtype)
                gap = F.embedding_bag(pairs, vt, per_sample_weights=torch.stack([ones, -ones], 1),
                                      mode="sum").relu_()  # (E, N)
                terms = gap * gap if mode == "squared_hinge" else gap
                aux = (vt, gap)
            else:
                gathered = vt.index_select(0, index)  # (2E, N)
                v_par, v_chi = gathered[:num_edges], gathered[num_edges:]
                if mode == "soft":
                    a = torch.sigmoid((threshold - v_par) / temperature)
                    b = torch.sigmoid((v_chi - threshold) / temperature)
                    terms = a * b
                    aux = (vt, a, b)
                else:
                    terms = ((v_par < threshold) & (v_chi > threshold)).to(v.dtype)
        if terms is not None:
            if total:  # C·Σ_e w_e Σ_n terms (sums along the sample axis, then one dot), added to the BCE sum
                out = torch.add(out, torch.dot(terms.sum(1), weight), alpha=num_labels * weight_scale)
            else:
                out = torch.addmv(out, terms.t(), weight, alpha=weight_scale)
        if total:
            out = out.div_(num_labels * num_samples if reduction == "mean" else num_labels)  # empty batch: NaN
        ctx.mode, ctx.temperature, ctx.num_edges, ctx.reduction = mode, temperature, num_edges, reduction
        ctx.weight_scale = weight_scale
        opt = (valid, pos_weight, count, incidence, s, order, offsets)
        ctx.present = tuple(t is not None for t in opt)
        ctx.save_for_backward(logits, target, index, weight, *(t for t in opt if t is not None), *aux)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        logits, target, index, weight = saved[:4]
        k = 4  # optional tensors follow in save order (indexing, not list.pop: Dynamo traces tuples only)
        opt: list[Tensor | None] = []
        for present in ctx.present:
            opt.append(saved[k] if present else None)
            k += int(present)
        valid, pos_weight, count, incidence, s, order, offsets = opt
        aux = saved[k:]
        none = (None,) * 13
        num_samples, num_labels = logits.shape
        sig = torch.sigmoid(logits) if s is None else s
        if pos_weight is None:
            dbce = sig.sub_(target) if s is None else sig - target  # s itself is still needed below
        else:  # pw·y·(s − 1) + (1 − y)·s = s·(1 + (pw − 1)·y) − pw·y
            dbce = torch.addcmul(sig, sig, target * (pos_weight - 1)).sub_(target * pos_weight)
        if valid is not None:
            dbce.mul_(valid)
        # grad = g ⊙ (dbce / count + P), P the penalty's gradient. With nothing masked count = C in every row, and
        # grad = (g / C) ⊙ (dbce + C·P): C goes into the edge weights' scale and saves a pass over (N, C).
        # ``g`` is one number for a total (divided by N for 'mean'), one per row otherwise.
        if count is None:
            if ctx.reduction == "none":
                factor = (grad_out / num_labels).unsqueeze(1)
            else:
                factor = grad_out / (num_labels * num_samples if ctx.reduction == "mean" else num_labels)
            pen_scale = ctx.weight_scale * num_labels
        else:
            dbce.div_(count.unsqueeze(1))
            factor, pen_scale = grad_out.unsqueeze(1), ctx.weight_scale
        if ctx.mode == "hard" or ctx.num_edges == 0:
            return (dbce.mul_(factor), *none)
        if incidence is not None:
            (gap,) = aux
            d_gap = torch.sign(gap) if ctx.mode != "squared_hinge" else gap * 2  # gap >= 0
            weighted = incidence * weight.unsqueeze(1)  # (E, C)
            if s is None:
                dbce.addmm_(d_gap.t(), weighted, alpha=pen_scale)
            else:  # · σ'(x) = s − s²
                dbce.add_(torch.mm(d_gap.t(), weighted).mul_(torch.addcmul(s, s, s, value=-1)), alpha=pen_scale)
            return (dbce.mul_(factor), *none)
        vt = aux[0]
        if ctx.mode == "soft":
            parents, children = index[:ctx.num_edges], index[ctx.num_edges:]
            a, b = aux[1:]
            w = weight.unsqueeze(1) * (pen_scale / ctx.temperature)
            d_vt = torch.zeros_like(vt)  # (C, N)
            d_vt.index_add_(0, parents, -(a * (1 - a) * b) * w).index_add_(0, children, (b * (1 - b) * a) * w)
        else:  # per label, one bag of its edges' gradients: +w_e where it is the child, −w_e where the parent
            gap = aux[1]
            d_gap = torch.sign(gap) if ctx.mode != "squared_hinge" else gap * 2  # gap >= 0
            assert order is not None and offsets is not None
            rows = torch.remainder(order, ctx.num_edges)  # the edge of each (label, edge) incidence
            signed = torch.cat([weight * -pen_scale, weight * pen_scale]).index_select(0, order)
            d_vt = F.embedding_bag(rows, d_gap, offsets, per_sample_weights=signed.to(d_gap.dtype), mode="sum")
        if s is not None:  # · σ'(x) = s − s²
            d_vt.mul_(torch.addcmul(vt, vt, vt, value=-1))
        # a transpose and a contiguous add are faster than one strided add
        return (dbce.add_(d_vt.t().contiguous()).mul_(factor), *none)


def _check_shapes(input: Tensor, target: Tensor, edge_index: Tensor, edge_weight: Tensor,
                  pos_weight: Tensor | None) -> None:
    if input.ndim != 2:
        raise ValueError(f"Expected `input` of shape (N, C), got {tuple(input.shape)}")
    if target.shape != input.shape:
        raise ValueError(f"Expected `target` of shape {tuple(input.shape)} like `input`, got {tuple(target.shape)}")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_weight.shape != (edge_index.shape[1],):
        raise ValueError(f"Expected edge_index (2, E) and edge_weight (E,), got {tuple(edge_index.shape)} and "
                         f"{tuple(edge_weight.shape)}")
    if pos_weight is not None and pos_weight.shape != (input.shape[1],):
        raise ValueError(f"Expected `pos_weight` of shape ({input.shape[1]},), got {tuple(pos_weight.shape)}")


def hbce_loss(
    input: Tensor,
    target: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    scale: float | None = None,
    mode: str = DEFAULT_MODE,
    threshold: float = 0.5,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
    from_logits: bool = True,
    pos_weight: Tensor | None = None,
    ignore_index: float | None = None,
    edge_reduction: str | None = None,
) -> Tensor:
    """Hierarchical BCE: per sample, the mean BCE over labels plus ``Σ_e scale · w_e · penalty_e``.

    Args:
        input: ``(N, C)`` logits (``from_logits=True``) or probabilities.
        target: ``(N, C)`` 0/1 targets (float or integer); NaN and ``ignore_index`` entries are left out of the
            BCE mean of their sample (the penalty depends on predictions only).
        edge_index: ``(2, E)`` long tensor, parents in row 0 (``hierarchy.edge_index``).
        edge_weight: ``(E,)`` penalties ``w_e``.
        scale: λ; the effective weight of edge ``e`` is ``scale · w_e``. ``scale=0`` gives plain BCE. ``None``
            (default) is the mode's default: 0.1 for ``'logit_hinge'``, 1.0 for the others.
        mode: ``'logit_hinge'`` (default: ``max(0, z_child − z_parent)`` on logits), ``'hinge'``,
            ``'squared_hinge'``, ``'soft'`` or ``'hard'`` (the reference indicator, whose gradient is zero: it
            changes the loss value but never the training). See :func:`~hierloss.losses.hierarchy_penalty.edge_terms`.
        threshold: decision threshold of ``'hard'`` and ``'soft'``.
        temperature: temperature of ``'soft'``.
        reduction: ``'mean'`` over samples, ``'sum'`` over samples, or ``'none'`` for the ``(N,)`` vector. Note
            that ``'sum'`` sums per-sample losses, each a *mean* over labels, so it is ``N`` times ``'mean'`` and
            not PyTorch's ``'sum'`` over all ``N·C`` elements.
        from_logits: ``True``: stable BCE-with-logits; ``False``: probabilities clipped to ``[1e-7, 1 − 1e-7]``
            as the reference did.
        pos_weight: ``(C,)`` weight of positive examples per label, as in :class:`torch.nn.BCEWithLogitsLoss`.
        ignore_index: a target value (e.g. ``-1``) to leave out of the BCE.
        edge_reduction: ``'sum'`` or ``'mean'`` of the penalty over edges; ``None`` is ``'sum'`` for ``'hard'``
            (the reference) and ``'mean'`` for the trainable modes, so that one ``scale`` means the same on
            hierarchies of any size.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> logits = torch.tensor([[-1.0, 2.0]])
        >>> target = torch.tensor([[1.0, 1.0]])
        >>> round(hbce_loss(logits, target, h.edge_index, torch.ones(1), scale=0.0).item(), 4)
        0.7201
    """
    return _hbce_loss(input, target, edge_index, edge_weight, scale, mode, threshold, temperature, reduction,
                      from_logits, pos_weight, ignore_index, edge_reduction, None)


def _hbce_loss(input: Tensor, target: Tensor, edge_index: Tensor, edge_weight: Tensor, scale: float | None,
               mode: str, threshold: float, temperature: float, reduction: str, from_logits: bool,
               pos_weight: Tensor | None, ignore_index: float | None, edge_reduction: str | None,
               plan: _Plan | None) -> Tensor:
    """:func:`hbce_loss` with an optional precomputed edge plan (``HBCELoss`` keeps one in buffers)."""
    edge_red = check_penalty_args(mode, threshold, temperature, edge_reduction)
    scale = resolve_scale(mode, scale)
    check_reduction(reduction)
    _check_shapes(input, target, edge_index, edge_weight, pos_weight)
    num_edges = edge_index.shape[1]
    with autocast_disabled(input.device.type):
        x = input if input.dtype == torch.float64 else input.float()  # low precision computes in float32
        pw = None if pos_weight is None else pos_weight.to(x.dtype)
        weight = edge_weight.to(x.dtype)
        weight_scale = scale / num_edges if edge_red == "mean" and num_edges else scale
        clean, valid = target_mask(target, ignore_index, dtype=x.dtype)
        y = clean.to(x.dtype)
        if from_logits:
            index = edge_index.reshape(-1)
            num_labels = x.shape[1]
            incidence = order = offsets = None
            if mode in DIFFERENCE_MODES and 0 < num_edges * num_labels <= DENSE_MAX_ENTRIES:
                known = None if plan is None else plan[0]
                incidence = _incidence(edge_index, num_labels, x) if known is None else known.to(x.dtype)
            elif mode in DIFFERENCE_MODES and num_edges:
                order, offsets = _bag_plan(index, num_labels) if plan is None or plan[1] is None else plan[1:]
            out = _FusedHBCE.apply(  # type: ignore[no-untyped-call]
                x, y, valid, pw, index, weight, weight_scale, incidence, order, offsets, mode, float(threshold),
                float(temperature), reduction
            )
            return out if valid is None else reduce_samples(out, reduction)
        else:
            per_sample = _hbce_from_probabilities(x, y, valid, pw, edge_index, weight * weight_scale, mode, threshold,
                                                  temperature)
    return reduce_samples(per_sample, reduction)


def _hbce_from_probabilities(p: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
                             edge_index: Tensor, weight: Tensor, mode: str, threshold: float,
                             temperature: float) -> Tensor:
    """Per-sample HBCE on probabilities, with the reference's clipping; plain autograd."""
    clipped = p.clamp(CLIP, 1 - CLIP)
    positive = torch.log(clipped) * (y if pos_weight is None else y * pos_weight)
    bce = -(positive + (1 - y) * torch.log(1 - clipped))
    bce_mean = bce.mean(1) if valid is None else (bce * valid).sum(1) / valid.sum(1).clamp_min(1)
    v = penalty_space(p, mode, from_logits=False)
    terms = edge_terms(v.index_select(1, edge_index[0]), v.index_select(1, edge_index[1]), mode, threshold,
                       temperature)
    return bce_mean + terms @ weight


class HBCELoss(nn.Module):
    """Hierarchical BCE loss: BCE plus a penalty on parent → child violations; ``loss(input, target)``.

    ``HBCELoss(hierarchy)`` trains with the default penalty (``mode='logit_hinge'``, averaged over edges,
    λ = 0.1);
    ``HBCELoss(hierarchy, penalties=EdgePenalties, scale=λ, mode='hard', from_logits=False)`` is the
    reference loss of Asadi et al. (2025), value for value. See :func:`hbce_loss` for every argument.

    Constants (``edge_index``, ``edge_weight``, ``pos_weight``) are buffers: ``.to()``, ``.cuda()``, ``.half()``
    and ``state_dict()`` work, and ``forward`` never synchronises with the host.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        penalties: a float (fixed β on every edge), a length-``E`` sequence/tensor in ``hierarchy.edges`` order,
            a ``{(parent, child): value}`` mapping naming every edge, or an
            :class:`~hierloss.penalties.EdgePenalties`.
        scale: λ, multiplies every penalty; ``None``: the mode's default (0.1 for ``'logit_hinge'``, else 1.0).
        mode: ``'logit_hinge'`` (default), ``'hinge'``, ``'squared_hinge'``, ``'soft'`` or ``'hard'``.
        threshold: threshold of ``'hard'`` / ``'soft'``.
        temperature: temperature of ``'soft'``.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over samples.
        from_logits: whether ``forward`` receives logits (default) or probabilities.
        pos_weight: ``(C,)`` positive-class weights.
        ignore_index: target value to leave out of the BCE (NaN targets always are).
        closure: penalise every (ancestor, descendant) pair instead of direct edges only.
        edge_reduction: ``'sum'`` | ``'mean'`` | ``None`` (``'sum'`` for ``'hard'``, else ``'mean'``).

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import HBCELoss, Hierarchy
        >>> h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
        >>> criterion = HBCELoss(h)
        >>> logits = torch.randn(8, 3, requires_grad=True)
        >>> criterion(logits, torch.randint(0, 2, (8, 3)).float()).backward()
    """

    edge_index: Tensor
    edge_weight: Tensor
    pos_weight: Tensor | None
    _incidence: Tensor | None
    _bag_order: Tensor
    _bag_offsets: Tensor

    def __init__(
        self,
        hierarchy: Hierarchy,
        penalties: Any = 1.0,
        scale: float | None = None,
        mode: str = DEFAULT_MODE,
        threshold: float = 0.5,
        temperature: float = DEFAULT_TEMPERATURE,
        reduction: str = "mean",
        from_logits: bool = True,
        pos_weight: Tensor | None = None,
        ignore_index: float | None = None,
        closure: bool = False,
        edge_reduction: str | None = None,
    ) -> None:
        super().__init__()
        check_penalty_args(mode, threshold, temperature, edge_reduction)
        check_reduction(reduction)
        edge_index, edge_weight = resolve_edges(hierarchy, penalties, closure)
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
            if pos_weight.shape != (hierarchy.num_labels,):
                raise ValueError(f"Expected `pos_weight` of shape ({hierarchy.num_labels},), got "
                                 f"{tuple(pos_weight.shape)}")
        self.hierarchy = hierarchy
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)
        self.register_buffer("pos_weight", pos_weight)
        # Derived constants, rebuilt from the hierarchy (not in state_dict): the dense incidence for small
        # hierarchies and the bag plan of the gradient scatter.
        small = 0 < edge_index.shape[1] * hierarchy.num_labels <= DENSE_MAX_ENTRIES
        order, offsets = _bag_plan(edge_index.reshape(-1), hierarchy.num_labels)
        self.register_buffer("_incidence", _incidence(edge_index, hierarchy.num_labels, edge_weight) if small else None,
                             persistent=False)
        self.register_buffer("_bag_order", order, persistent=False)
        self.register_buffer("_bag_offsets", offsets, persistent=False)
        self.scale = resolve_scale(mode, scale)
        self.mode = mode
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.reduction = reduction
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self.closure = closure
        self.edge_reduction = edge_reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits or probabilities) against ``target`` (``(N, C)``)."""
        if input.ndim != 2 or input.shape[1] != self.hierarchy.num_labels:
            raise ValueError(f"Expected `input` of shape (N, {self.hierarchy.num_labels}), got {tuple(input.shape)}")
        return _hbce_loss(input, target, self.edge_index, self.edge_weight, self.scale, self.mode, self.threshold,
                          self.temperature, self.reduction, self.from_logits, self.pos_weight, self.ignore_index,
                          self.edge_reduction, (self._incidence, self._bag_order, self._bag_offsets))

    def extra_repr(self) -> str:
        return (f"num_labels={self.hierarchy.num_labels}, num_edges={self.edge_index.shape[1]}, mode={self.mode!r}, "
                f"scale={self.scale}, edge_reduction={self.edge_reduction!r}, from_logits={self.from_logits}")
