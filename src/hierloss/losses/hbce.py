"""Hierarchical binary cross-entropy (HBCE): BCE plus a penalty on hierarchy violations.

For logits (or probabilities) ``x`` of shape ``(N, C)``, targets ``y`` and the hierarchy's edges ``e = (p, c)``,
sample ``n`` costs::

    loss_n = mean over the valid labels c of BCE(x_nc, y_nc)  +  Σ_e λ' · w_e · penalty(v_np, v_nc)

with ``λ' = λ`` (``edge_reduction='sum'``) or ``λ / E`` (``'mean'``), and ``v`` the logits or the probabilities as
the penalty form reads them (:func:`~hierloss.losses.hierarchy_penalty.edge_terms` lists the forms). This is
Asadi et al. (2025); ``mode='hard'`` with ``from_logits=False`` reproduces the authors' Keras loss exactly,
including its zero penalty gradient. The trainable modes give the penalty a gradient that raises the parent and
lowers the child on a violation. ``reduction`` then averages or sums ``loss_n`` over samples.

This module states the loss: arguments, validation, shapes and reductions. How it is computed (a fused kernel
with an analytic backward, CPU shortcuts, the plain-PyTorch reference) is chosen per call by
:mod:`hierloss.losses._hbce_backend`; ``hierloss.losses.hbce_backend(...)`` forces a backend for debugging.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hierloss._autocast import autocast_disabled
from hierloss._penalty_forms import DEFAULT_MODE, DEFAULT_TEMPERATURE
from hierloss._reduction import check_reduction, reduce_loss
from hierloss._validation import check_pos_weight, check_probabilities, check_target, pos_weight_constant, validating
from hierloss.hierarchy import Hierarchy
from hierloss.losses import _hbce_backend
from hierloss.losses._edges import EdgeModule, check_penalty_args, resolve_edges, resolve_scale

__all__ = ["HBCELoss", "hbce_loss"]


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
    hierarchy: Hierarchy,
    edge_weight: Any = 1.0,
    scale: float | None = None,
    mode: str = DEFAULT_MODE,
    threshold: float = 0.5,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
    from_logits: bool = True,
    pos_weight: Tensor | None = None,
    ignore_index: float | None = None,
    edge_reduction: str | None = None,
    closure: bool = False,
    validate_args: bool = True,
) -> Tensor:
    """Hierarchical BCE: per sample, the mean BCE over labels plus ``Σ_e scale · w_e · penalty_e``.

    Args:
        input: ``(N, C)`` logits (``from_logits=True``) or probabilities.
        target: ``(N, C)`` 0/1 targets (float or integer); NaN and ``ignore_index`` entries are left out of the
            BCE mean of their sample (the penalty depends on predictions only).
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``, ``E = hierarchy.num_edges``. Its edge
            tensors are built (and copied to ``input``'s device) on every call: in a training loop use
            :class:`HBCELoss`, which keeps them in buffers.
        edge_weight: the weights ``w_e``: a number (the same on every edge, the paper's fixed β), a length-``E``
            sequence or tensor in ``hierarchy.edges`` order, a ``{(parent, child): value}`` mapping naming every
            edge, or an :class:`~hierloss.edge_weights.EdgeWeights` (e.g. the paper's data-driven weights,
            ``ConditionalWeight().fit(hierarchy, labels)``).
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
        closure: penalise every (ancestor, descendant) pair of ``hierarchy.closure()`` instead of direct edges
            (per-edge weights then follow ``hierarchy.closure().edges``).
        validate_args: check values and raise a ``ValueError`` naming the first offending column and value:
            targets in ``[0, 1]``, NaN or ``ignore_index`` (a CheXpert ``-1`` without ``ignore_index=-1`` is
            refused); probabilities in ``[0, 1]`` with ``from_logits=False``; ``pos_weight`` finite and ``>= 0``.
            This reads values back, a device synchronisation on a GPU; ``False`` checks no value and never
            synchronises (shapes are always checked). Skipped under ``torch.compile``.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> logits = torch.tensor([[-1.0, 2.0]])
        >>> target = torch.tensor([[1.0, 1.0]])
        >>> round(hbce_loss(logits, target, h, scale=0.0).item(), 4)
        0.7201
    """
    edge_index, weight = resolve_edges(hierarchy, edge_weight, closure)
    if input.ndim != 2 or input.shape[1] != hierarchy.num_labels:
        raise ValueError(f"Expected `input` of shape (N, {hierarchy.num_labels}), got {tuple(input.shape)}")
    return _hbce_loss(input, target, edge_index.to(input.device), weight.to(input.device), scale, mode, threshold,
                      temperature, reduction, from_logits, pos_weight, ignore_index, edge_reduction, validate_args,
                      hierarchy.labels, None)


def _hbce_loss(input: Tensor, target: Tensor, edge_index: Tensor, edge_weight: Tensor, scale: float | None,
               mode: str, threshold: float, temperature: float, reduction: str, from_logits: bool,
               pos_weight: Tensor | None, ignore_index: float | None, edge_reduction: str | None,
               validate_args: bool, labels: tuple[str, ...] | None, plan: _hbce_backend.EdgePlan | None) -> Tensor:
    """:func:`hbce_loss` on edge tensors, with the label names (for errors) and an optional precomputed edge plan
    (:class:`HBCELoss` passes its buffers)."""
    form, edge_red = check_penalty_args(mode, threshold, temperature, edge_reduction)
    scale = resolve_scale(form, scale)
    check_reduction(reduction)
    _check_shapes(input, target, edge_index, edge_weight, pos_weight)
    if validating(validate_args):
        check_target(target, ignore_index, labels)
        if not from_logits:
            check_probabilities(input, labels)
        if pos_weight is not None:
            check_pos_weight(pos_weight, labels)
    num_edges = edge_index.shape[1]
    with autocast_disabled(input.device.type):  # low precision computes in float32
        x = input if input.dtype == torch.float64 else input.float()
        pw = None if pos_weight is None else pos_weight.to(x.dtype)
        weight_scale = scale / num_edges if edge_red == "mean" and num_edges else scale
        loss, reduced = _hbce_backend.hbce(x, target, ignore_index, pw, edge_index, edge_weight.to(x.dtype),
                                           weight_scale, form, threshold, temperature, reduction, from_logits, plan)
    return loss if reduced else reduce_loss(loss, reduction)


class HBCELoss(EdgeModule):
    """Hierarchical BCE loss: BCE plus a penalty on parent → child violations; ``loss(input, target)``.

    ``HBCELoss(hierarchy)`` trains with the default penalty (``mode='logit_hinge'``, averaged over edges,
    λ = 0.1);
    ``HBCELoss(hierarchy, edge_weight=EdgeWeights, scale=λ, mode='hard', from_logits=False)`` is the
    reference loss of Asadi et al. (2025), value for value. See :func:`hbce_loss` for every argument.

    Constants (``edge_index``, ``edge_weight``, ``pos_weight``) are buffers: ``.to()``, ``.cuda()``, ``.half()``
    and ``state_dict()`` work, and ``forward`` never synchronises with the host. A state dict saved over another
    hierarchy is refused when loaded (its ``edge_index`` differs); the weights (``edge_weight``) load freely.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        edge_weight: the weights ``w_e`` (see :func:`hbce_loss`): a number (fixed β on every edge), a length-``E``
            sequence/tensor in ``hierarchy.edges`` order, a ``{(parent, child): value}`` mapping naming every edge,
            or an :class:`~hierloss.edge_weights.EdgeWeights`.
        scale: λ, multiplies every penalty; ``None``: the mode's default (0.1 for ``'logit_hinge'``, else 1.0).
        mode: ``'logit_hinge'`` (default), ``'hinge'``, ``'squared_hinge'``, ``'soft'`` or ``'hard'``.
        threshold: threshold of ``'hard'`` / ``'soft'``.
        temperature: temperature of ``'soft'``.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over samples.
        from_logits: whether ``forward`` receives logits (default) or probabilities.
        pos_weight: ``(C,)`` positive-class weights.
        ignore_index: target value to leave out of the BCE (NaN targets always are).
        validate_args: check target values and probabilities in ``forward`` (see :func:`hbce_loss`); ``False``
            never synchronises with the device.
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

    pos_weight: Tensor | None
    _incidence: Tensor | None
    _bag_order: Tensor
    _bag_offsets: Tensor

    def __init__(
        self,
        hierarchy: Hierarchy,
        edge_weight: Any = 1.0,
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
        validate_args: bool = True,
    ) -> None:
        form, effective_edge_reduction = check_penalty_args(mode, threshold, temperature, edge_reduction)
        check_reduction(reduction)
        pos_weight = pos_weight_constant(pos_weight, hierarchy.labels)
        super().__init__(hierarchy, edge_weight, closure)
        self.register_buffer("pos_weight", pos_weight)
        # The fused kernel's edge plan, derived from edge_index (not in the state dict)
        plan = _hbce_backend.edge_plan(self.edge_index, hierarchy.num_labels)
        self.register_buffer("_incidence", plan.incidence, persistent=False)
        self.register_buffer("_bag_order", plan.order, persistent=False)
        self.register_buffer("_bag_offsets", plan.offsets, persistent=False)
        self.scale = resolve_scale(form, scale)
        self.mode = mode
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.reduction = reduction
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self.validate_args = validate_args
        self.edge_reduction = edge_reduction
        self._edge_reduction = effective_edge_reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits or probabilities) against ``target`` (``(N, C)``)."""
        self._check_width(input)
        plan = _hbce_backend.EdgePlan(self._incidence, self._bag_order, self._bag_offsets)
        return _hbce_loss(input, target, self.edge_index, self.edge_weight, self.scale, self.mode, self.threshold,
                          self.temperature, self.reduction, self.from_logits, self.pos_weight, self.ignore_index,
                          self.edge_reduction, self.validate_args, self.hierarchy.labels, plan)

    def extra_repr(self) -> str:
        return (f"num_labels={self.hierarchy.num_labels}, num_edges={self.edge_index.shape[1]}, mode={self.mode!r}, "
                f"scale={self.scale}, edge_reduction={self._edge_reduction!r}, from_logits={self.from_logits}")
