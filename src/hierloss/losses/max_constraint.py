"""C-HMCNN's max-constraint module (MCM) and its training loss, MCLoss (Giunchiglia & Lukasiewicz, NeurIPS 2020).

``MCM(h)`` replaces every label's probability by the max over itself and all its descendants, so the output is
coherent by construction (a parent is never below a child). C-HMCNN trains the unconstrained head with::

    MCLoss = BCE( (1 − y) · MCM(h) + y · MCM(y · h),  y ),   h = σ(logits),   averaged over N·C

and predicts with ``MCM(h)`` at inference. Because ``σ`` is increasing, ``MCM(σ(z)) = σ(MCM(z))``, and
``y · h`` equals ``σ`` of the logits masked with ``−∞`` where ``y = 0``; the loss is therefore computed as a stable
BCE-with-logits on the *constrained logits* ``where(y, MCM(where(y, z, −∞)), MCM(z))``. That is the same loss
(no probability clamping needed), never masks raw logits with 0 (which would push every constrained logit to
``≥ 0``), and never builds the dense ``(N, C, C)`` tensor of the authors' code: the max over descendants is the
propagation engine's (:mod:`hierloss.propagation`), ``O(N·(C + E))`` time and memory, with a written
backward; both propagations run in one walk.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hierloss._custom_ops import compiled
from hierloss._hierarchy_module import HierarchyModule
from hierloss._masking import target_mask
from hierloss._reduction import check_reduction, reduce_valid
from hierloss._validation import check_target, validating, values_readable
from hierloss.hierarchy import Hierarchy, check_hierarchy
from hierloss.losses._prelude import prelude
from hierloss.propagation import LevelPlan, constrained_logits

__all__ = ["MCLoss", "mc_loss"]


def mc_loss(
    input: Tensor,
    target: Tensor,
    hierarchy: Hierarchy,
    reduction: str = "mean",
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """C-HMCNN's max-constraint loss: BCE on ``(1 − y)·MCM(h) + y·MCM(y·h)`` with ``h = σ(input)``.

    Computed in logit space (see the module docstring): equal to the authors' probability-space loss, but finite
    and exact for any finite logits, and without the ``(N, C, C)`` tensor.

    Args:
        input: ``(N, C)`` logits of the unconstrained head, ``C = hierarchy.num_labels``.
        target: ``(N, C)`` 0/1 targets (hierarchy-consistent, as C-HMCNN assumes: every ancestor of a positive is
            positive). NaN and ``ignore_index`` entries are left out of the BCE; inside ``MCM(y·h)`` they count as
            negatives.
        hierarchy: the label hierarchy; its propagation plan is built on every call (:class:`MCLoss` keeps it
            in buffers).
        reduction: ``'mean'`` over the ``N·C`` (valid) elements, as the authors' ``nn.BCELoss``; ``'sum'``; or
            ``'none'`` for the ``(N, C)`` element-wise losses (0 at masked entries).
        ignore_index: a target value (e.g. ``-1``) to leave out.
        validate_args: check that every target is in ``[0, 1]``, NaN or ``ignore_index`` and raise a
            ``ValueError`` naming the first offending column and value otherwise (default). This reads a value
            back, a device synchronisation on a GPU; ``False`` checks no value and never synchronises. Under
            ``torch.compile``, and for a target batched by ``torch.func.vmap``, values are not checked.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> logits = torch.tensor([[-2.0, 1.0]])  # child above parent
        >>> round(mc_loss(logits, torch.tensor([[0.0, 0.0]]), h).item(), 4)  # parent's constrained logit is 1
        1.3133
    """
    check_hierarchy(hierarchy)
    return _mc_loss(input, target, LevelPlan.build(hierarchy, "descendants", input.device), reduction, ignore_index,
                    validate_args, hierarchy.labels)


def _mc_loss(input: Tensor, target: Tensor, plan: LevelPlan, reduction: str, ignore_index: float | None,
             validate_args: bool, labels: tuple[str, ...]) -> Tensor:
    """:func:`mc_loss` with the hierarchy's upward plan given (:class:`MCLoss` keeps it in buffers)."""
    with prelude(input, target, reduction) as z:
        if validating(validate_args) and values_readable(target):  # a target batched by vmap cannot be read back
            check_target(target, ignore_index, labels)
        if compiled():  # under torch.compile: this code as one operator (hierloss.losses._compiled)
            import hierloss.losses._compiled as _compiled

            return _compiled.mc_loss(z, target, plan, reduction, ignore_index)
        clean, valid = target_mask(target, ignore_index)
        y = clean.to(z.dtype)
        # where(y, MCM(where(y, z, −inf)), MCM(z)): one walk of the engine for both, one scatter in the backward
        logits = constrained_logits(z, y > 0.5, plan)
        return reduce_valid(F.binary_cross_entropy_with_logits(logits, y, reduction="none"), reduction, valid)


class MCLoss(HierarchyModule):
    """C-HMCNN's training loss (Giunchiglia & Lukasiewicz, NeurIPS 2020); ``loss(logits, target)``.

    ``BCE((1 − y)·MCM(h) + y·MCM(y·h), y)`` with ``h = σ(logits)``, averaged over ``N·C``; see :func:`mc_loss`.
    Predict with ``MaxConstraint(hierarchy)(torch.sigmoid(logits))``. The propagation plan is stored as buffers
    (``.to()`` and ``state_dict()`` work; a state dict saved over another hierarchy is refused) and ``forward``
    never synchronises with the host.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        reduction: ``'mean'`` (over ``N·C`` valid elements) | ``'sum'`` | ``'none'`` (``(N, C)``).
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values (see the functional form); ``False`` never synchronises.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy, MaxConstraint
        >>> h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
        >>> criterion, constrain = MCLoss(h), MaxConstraint(h)
        >>> logits = torch.randn(8, 3, requires_grad=True)
        >>> criterion(logits, torch.tensor([[1.0, 1.0, 0.0]]).expand(8, 3)).backward()
        >>> probs = constrain(torch.sigmoid(logits))  # coherent predictions
        >>> bool((probs[:, 0] >= probs[:, 1]).all() and (probs[:, 1] >= probs[:, 2]).all())
        True
    """

    def __init__(self, hierarchy: Hierarchy, reduction: str = "mean", ignore_index: float | None = None,
                 validate_args: bool = True) -> None:
        super().__init__(hierarchy)
        self._register_plan("plan", "descendants")
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` logits) against ``target`` (``(N, C)``)."""
        self._check_width(input)
        return _mc_loss(input, target, self._level_plan(), self.reduction, self.ignore_index, self.validate_args,
                        self.hierarchy.labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduction={self.reduction!r}"
