"""Hierarchical binary cross-entropy (HBCE): BCE plus a penalty on hierarchy violations.

Per sample ``n``::

    loss_n = mean over (valid) labels of BCE(input_n, target_n)  +  Σ_e scale · w_e · penalty_e(p_n)

as in Asadi et al. (2025); ``mode='hard'`` with ``from_logits=False`` reproduces the authors' Keras loss exactly,
including its zero penalty gradient. The trainable modes give the penalty a gradient that raises the parent and
lowers the child on a violation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hierloss._masking import target_mask
from hierloss._reduction import check_reduction, reduce_samples
from hierloss.hierarchy import Hierarchy
from hierloss.losses._edges import check_penalty_args, resolve_edges
from hierloss.losses.hierarchy_penalty import DEFAULT_MODE, DEFAULT_TEMPERATURE, edge_terms

__all__ = ["HBCELoss", "hbce_loss"]

_CLIP = 1e-7  # the reference's (Keras') probability clipping


class _FusedHBCE(torch.autograd.Function):
    """Per-sample HBCE from logits with an analytic backward; the sigmoid is computed once and shared.

    The parent and child columns of every edge are read with one ``index_select`` of ``cat(parents, children)``
    and their gradients written back with ``index_add_``, on a ``(C, N)`` copy of the probabilities so that each
    edge moves two contiguous rows (measured 3-5x faster than gathering columns of the ``(N, C)`` layout).
    ``target`` arrives cleaned (NaN and ignored entries set to 0) and ``valid`` is a float 0/1 mask of the targets
    that count (``None``: all). ``weight`` holds ``scale · w_e`` (divided by ``E`` for ``edge_reduction='mean'``).
    Gradients flow to ``logits`` only.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
                index: Tensor, weight: Tensor, mode: str, threshold: float, temperature: float) -> Tensor:
        num_edges = weight.shape[0]
        s = torch.sigmoid(logits)
        bce = torch.addcmul(F.softplus(logits), logits, target, value=-1)  # softplus(x) − x·y
        if pos_weight is not None:  # + (pw − 1)·y·softplus(−x)
            bce = bce + (pos_weight - 1) * target * F.softplus(-logits)
        if valid is None:
            count = logits.new_full((logits.shape[0],), float(logits.shape[1]))
            per_sample = bce.mean(1)
        else:
            count = valid.sum(1).clamp_min_(1)
            per_sample = (bce * valid).sum(1) / count
        probs = s.t().contiguous()  # (C, N)
        gathered = probs.index_select(0, index)  # (2E, N)
        p_par, p_chi = gathered[:num_edges], gathered[num_edges:]
        aux: tuple[Tensor, ...] = ()
        if mode == "soft":
            a = torch.sigmoid((threshold - p_par) / temperature)
            b = torch.sigmoid((p_chi - threshold) / temperature)
            terms = a * b
            aux = (a, b)
        elif mode == "hard":
            terms = ((p_par < threshold) & (p_chi > threshold)).to(s.dtype)
        else:
            terms = torch.sub(p_chi, p_par).relu_()
            aux = (terms,)
            if mode == "squared_hinge":
                terms = terms * terms
        per_sample = torch.addmv(per_sample, terms.t(), weight)
        ctx.mode, ctx.temperature, ctx.num_edges = mode, temperature, num_edges
        ctx.has_valid, ctx.has_pw = valid is not None, pos_weight is not None
        extra = [t for t in (valid, pos_weight) if t is not None]
        ctx.save_for_backward(logits, s, probs, target, count, index, weight, *extra, *aux)
        return per_sample

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        logits, s, probs, target, count, index, weight = saved[:7]
        k = 7  # optional tensors follow in save order (indexing, not list.pop: Dynamo traces tuples only)
        valid = saved[k] if ctx.has_valid else None
        k += int(ctx.has_valid)
        pos_weight = saved[k] if ctx.has_pw else None
        k += int(ctx.has_pw)
        rest = saved[k:]
        dbce = s - target
        if pos_weight is not None:  # − (pw − 1)·y·(1 − s)
            dbce = dbce - (pos_weight - 1) * target * torch.sigmoid(-logits)
        if valid is not None:
            dbce = dbce * valid
        grad = dbce * (grad_out / count).unsqueeze(1)
        if ctx.mode == "hard" or ctx.num_edges == 0:
            return grad, None, None, None, None, None, None, None, None
        parents, children = index[:ctx.num_edges], index[ctx.num_edges:]
        w = weight.unsqueeze(1)
        d_prob = torch.zeros_like(probs)  # (C, N)
        if ctx.mode == "soft":
            a, b = rest
            w = w / ctx.temperature
            d_prob.index_add_(0, parents, -(a * (1 - a) * b) * w).index_add_(0, children, (b * (1 - b) * a) * w)
        else:
            (gap,) = rest
            d_chi = torch.sign(gap).mul_(w) if ctx.mode == "hinge" else gap * (2 * w)  # gap >= 0
            d_prob.index_add_(0, children, d_chi).index_add_(0, parents, d_chi, alpha=-1)
        d_logit = (d_prob * torch.addcmul(probs, probs, probs, value=-1)).t().contiguous()  # · σ'(x) = s − s²
        grad = torch.addcmul(grad, d_logit, grad_out.unsqueeze(1))
        return grad, None, None, None, None, None, None, None, None


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
    scale: float = 1.0,
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
        scale: λ; the effective weight of edge ``e`` is ``scale · w_e``. ``scale=0`` gives plain BCE.
        mode: ``'hinge'`` (default), ``'squared_hinge'``, ``'soft'`` or ``'hard'`` (the reference indicator, whose
            gradient is zero: it changes the loss value but never the training).
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
    edge_red = check_penalty_args(mode, threshold, temperature, edge_reduction)
    check_reduction(reduction)
    _check_shapes(input, target, edge_index, edge_weight, pos_weight)
    num_edges = edge_index.shape[1]
    with torch.autocast(device_type=input.device.type, enabled=False):
        x = input if input.dtype == torch.float64 else input.float()  # low precision computes in float32
        pw = None if pos_weight is None else pos_weight.to(x.dtype)
        weight = edge_weight.to(x.dtype) * scale
        if edge_red == "mean" and num_edges:
            weight = weight / num_edges
        clean, valid_mask = target_mask(target, ignore_index)
        y = clean.to(x.dtype)
        valid = None if valid_mask is None else valid_mask.to(x.dtype)
        if from_logits:
            per_sample = _FusedHBCE.apply(  # type: ignore[no-untyped-call]
                x, y, valid, pw, edge_index.reshape(-1), weight, mode, float(threshold), float(temperature)
            )
        else:
            per_sample = _hbce_from_probabilities(x, y, valid, pw, edge_index, weight, mode, threshold, temperature)
    return reduce_samples(per_sample, reduction)


def _hbce_from_probabilities(p: Tensor, y: Tensor, valid: Tensor | None, pos_weight: Tensor | None,
                             edge_index: Tensor, weight: Tensor, mode: str, threshold: float,
                             temperature: float) -> Tensor:
    """Per-sample HBCE on probabilities, with the reference's clipping; plain autograd."""
    clipped = p.clamp(_CLIP, 1 - _CLIP)
    positive = torch.log(clipped) * (y if pos_weight is None else y * pos_weight)
    bce = -(positive + (1 - y) * torch.log(1 - clipped))
    bce_mean = bce.mean(1) if valid is None else (bce * valid).sum(1) / valid.sum(1).clamp_min(1)
    terms = edge_terms(p.index_select(1, edge_index[0]), p.index_select(1, edge_index[1]), mode, threshold,
                       temperature)
    return bce_mean + terms @ weight


class HBCELoss(nn.Module):
    """Hierarchical BCE loss: BCE plus a penalty on parent → child violations; ``loss(input, target)``.

    ``HBCELoss(hierarchy)`` trains with the default penalty (``mode='hinge'``, averaged over edges, λ = 1);
    ``HBCELoss(hierarchy, penalties=EdgePenalties, scale=λ, mode='hard', from_logits=False)`` is the
    reference loss of Asadi et al. (2025), value for value. See :func:`hbce_loss` for every argument.

    Constants (``edge_index``, ``edge_weight``, ``pos_weight``) are buffers: ``.to()``, ``.cuda()``, ``.half()``
    and ``state_dict()`` work, and ``forward`` never synchronises with the host.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        penalties: a float (fixed β on every edge), a length-``E`` sequence/tensor in ``hierarchy.edges`` order,
            a ``{(parent, child): value}`` mapping naming every edge, or an
            :class:`~hierloss.penalties.EdgePenalties`.
        scale: λ, multiplies every penalty.
        mode: ``'hinge'`` (default), ``'squared_hinge'``, ``'soft'`` or ``'hard'``.
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

    def __init__(
        self,
        hierarchy: Hierarchy,
        penalties: Any = 1.0,
        scale: float = 1.0,
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
        self.scale = float(scale)
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
        return hbce_loss(input, target, self.edge_index, self.edge_weight, self.scale, self.mode, self.threshold,
                         self.temperature, self.reduction, self.from_logits, self.pos_weight, self.ignore_index,
                         self.edge_reduction)

    def extra_repr(self) -> str:
        return (f"num_labels={self.hierarchy.num_labels}, num_edges={self.edge_index.shape[1]}, mode={self.mode!r}, "
                f"scale={self.scale}, edge_reduction={self.edge_reduction!r}, from_logits={self.from_logits}")
