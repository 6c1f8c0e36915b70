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

from typing import Any, cast

import torch
from torch import Tensor

from hierloss._autocast import autocast_disabled
from hierloss._penalty_forms import DEFAULT_MODE, DEFAULT_TEMPERATURE, PenaltyMode, PenaltySettings, resolve_settings
from hierloss._reduction import reduce_loss
from hierloss._validation import (
    as_pos_weight,
    check_pos_weight,
    check_probabilities,
    check_width,
    pos_weight_constant,
    target_is_clean,
)
from hierloss.hierarchy import Hierarchy
from hierloss.losses import _hbce_backend
from hierloss.losses._edges import EdgeModule, Setting, resolve_edges

__all__ = ["HBCELoss", "hbce_loss"]


def _check_shapes(input: Tensor, target: Tensor, num_labels: int) -> None:
    check_width(input, num_labels)
    if target.shape != input.shape:
        raise ValueError(f"Expected `target` of shape {tuple(input.shape)} like `input`, got {tuple(target.shape)}")


def hbce_loss(
    input: Tensor,
    target: Tensor,
    hierarchy: Hierarchy,
    edge_weight: Any = 1.0,
    scale: float | None = None,
    mode: PenaltyMode = DEFAULT_MODE,
    threshold: float = 0.5,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
    from_logits: bool = True,
    pos_weight: Any = None,
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
        edge_weight: the weights ``w_e``: a number (Python or NumPy) or 0-d tensor, the same on every edge (the
            paper's fixed β); a length-``E`` sequence, NumPy array or 1-D tensor in ``hierarchy.edges`` order; a
            ``{(parent, child): value}`` mapping naming every edge; or an :class:`~hierloss.edge_weights.EdgeWeights`
            (e.g. the paper's data-driven weights, ``ConditionalWeight().fit(hierarchy, labels)``).
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
        pos_weight: weight of positive examples per label, as in :class:`torch.nn.BCEWithLogitsLoss`: a ``(C,)``
            tensor, a length-``C`` sequence or NumPy array, or a number or 0-d tensor (the same for every label).
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
            synchronises (shapes are always checked). Skipped under ``torch.compile``, and for a tensor batched by
            ``torch.func.vmap`` (per-sample gradients), whose values cannot be read inside the transform.

    Gradients flow to ``input`` and, when it requires grad (distillation), to ``target`` (as with
    :class:`torch.nn.BCEWithLogitsLoss`); ``torch.func.grad``, ``jvp`` and ``vmap`` work.

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
    _check_shapes(input, target, hierarchy.num_labels)
    settings = resolve_settings(mode, scale, threshold, temperature, edge_reduction, reduction, from_logits,
                                validate_args, ignore_index)
    return _hbce_loss(input, target, edge_index.to(input.device), weight.to(input.device),
                      as_pos_weight(pos_weight, hierarchy.labels, input), settings, hierarchy.labels, None)


def _hbce_loss(input: Tensor, target: Tensor, edge_index: Tensor, edge_weight: Tensor, pos_weight: Tensor | None,
               settings: PenaltySettings, labels: tuple[str, ...], plan: _hbce_backend.EdgePlan | None) -> Tensor:
    """:func:`hbce_loss` on edge tensors of matching shapes (``(2, E)``, ``(E,)``, ``pos_weight`` ``(C,)``) and
    checked settings, with the label names (for the shapes and the errors) and an optional precomputed edge plan
    (:class:`HBCELoss` passes its buffers)."""
    _check_shapes(input, target, len(labels))
    clean = False  # whether the value checks found nothing to mask in the target
    if settings.validate_args and not torch.compiler.is_compiling():
        clean = target_is_clean(target, settings.ignore_index, labels)
        if not settings.from_logits:
            check_probabilities(input, labels)
        if pos_weight is not None:
            check_pos_weight(pos_weight, labels)
    with autocast_disabled("cpu" if input.is_cpu else input.device.type):  # low precision computes in float32
        x = input if input.dtype in _COMPUTE_DTYPES else input.float()
        pw = pos_weight if pos_weight is None or pos_weight.dtype == x.dtype else pos_weight.to(x.dtype)
        weight = edge_weight if edge_weight.dtype == x.dtype else edge_weight.to(x.dtype)
        loss, reduced = _hbce_backend.hbce(x, target, pw, edge_index, weight, settings, plan, clean)
    return loss if reduced else reduce_loss(loss, settings.reduction)


_COMPUTE_DTYPES = (torch.float32, torch.float64)


class HBCELoss(EdgeModule):
    """Hierarchical BCE loss: BCE plus a penalty on parent → child violations; ``loss(input, target)``.

    ``HBCELoss(hierarchy)`` trains with the default penalty (``mode='logit_hinge'``, averaged over edges,
    λ = 0.1);
    ``HBCELoss(hierarchy, edge_weight=EdgeWeights, scale=λ, mode='hard', from_logits=False)`` is the
    reference loss of Asadi et al. (2025), value for value. See :func:`hbce_loss` for every argument.

    Constants (``edge_index``, ``edge_weight``, ``pos_weight``) are buffers: ``.to()``, ``.cuda()``, ``.half()``
    and ``state_dict()`` work, and with ``validate_args=False`` ``forward`` never synchronises with the host. The
    hyper-parameters are checked once, here; assigning one later (``criterion.scale = 0.3``, a λ schedule) checks
    the new value at once. A state dict saved over another
    hierarchy is refused when loaded (its ``edge_index`` differs); the weights (``edge_weight``) load freely.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        edge_weight: the weights ``w_e`` (see :func:`hbce_loss`): a number or 0-d tensor (fixed β on every edge), a
            length-``E`` sequence, NumPy array or tensor in ``hierarchy.edges`` order, a ``{(parent, child): value}``
            mapping naming every edge, or an :class:`~hierloss.edge_weights.EdgeWeights`.
        scale: λ, multiplies every penalty; ``None``: the mode's default (0.1 for ``'logit_hinge'``, else 1.0).
        mode: ``'logit_hinge'`` (default), ``'hinge'``, ``'squared_hinge'``, ``'soft'`` or ``'hard'``.
        threshold: threshold of ``'hard'`` / ``'soft'``.
        temperature: temperature of ``'soft'``.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over samples.
        from_logits: whether ``forward`` receives logits (default) or probabilities.
        pos_weight: positive-class weights: ``(C,)`` (tensor, sequence or NumPy array) or one number for every
            label; checked (finite, ``>= 0``) here.
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
    _plan: _hbce_backend.EdgePlan
    _incidence: Tensor | None
    _bag_order: Tensor
    _bag_offsets: Tensor
    _edge_index_flat: Tensor

    ignore_index = Setting()  # with the hyper-parameters of EdgeModule (``loss.scale = 0.3`` checks at once)

    def __init__(
        self,
        hierarchy: Hierarchy,
        edge_weight: Any = 1.0,
        scale: float | None = None,
        mode: PenaltyMode = DEFAULT_MODE,
        threshold: float = 0.5,
        temperature: float = DEFAULT_TEMPERATURE,
        reduction: str = "mean",
        from_logits: bool = True,
        pos_weight: Any = None,
        ignore_index: float | None = None,
        closure: bool = False,
        edge_reduction: str | None = None,
        validate_args: bool = True,
    ) -> None:
        arguments: dict[str, Any] = dict(mode=mode, scale=scale, threshold=threshold, temperature=temperature,
                                         edge_reduction=edge_reduction, reduction=reduction,
                                         from_logits=from_logits, validate_args=validate_args,
                                         ignore_index=ignore_index)
        super().__init__(hierarchy, edge_weight, closure, arguments)
        self.register_buffer("pos_weight", pos_weight_constant(pos_weight, hierarchy.labels))
        # The fused kernel's edge plan, derived from edge_index (not in the state dict)
        plan = _hbce_backend.edge_plan(self.edge_index, hierarchy.num_labels)
        self.register_buffer("_incidence", plan.incidence, persistent=False)
        self.register_buffer("_bag_order", plan.order, persistent=False)
        self.register_buffer("_bag_offsets", plan.offsets, persistent=False)
        self.register_buffer("_edge_index_flat", plan.flat_index, persistent=False)
        self.__dict__["_plan"] = plan

    def _apply(self, fn: Any, recurse: bool = True) -> HBCELoss:
        module: HBCELoss = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # .to(), .half(): the plan
        # follows its buffers
        self.__dict__["_plan"] = _hbce_backend.EdgePlan(self._incidence, self._bag_order, self._bag_offsets,
                                                        self._edge_index_flat, {})
        return module

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits or probabilities) against ``target`` (``(N, C)``)."""
        buffers = self._buffers  # read directly: nn.Module.__getattr__ costs as much as a small tensor op
        return _hbce_loss(input, target, cast(Tensor, buffers["edge_index"]), cast(Tensor, buffers["edge_weight"]),
                          buffers["pos_weight"], self._settings, self.hierarchy.labels, self._plan)

    def extra_repr(self) -> str:
        return (f"num_labels={self.hierarchy.num_labels}, num_edges={self.edge_index.shape[1]}, mode={self.mode!r}, "
                f"scale={self.scale}, edge_reduction={self._settings.edge_reduction!r}, "
                f"from_logits={self.from_logits}")
