"""Conditional (chain-rule) training: BCE on each label given that its parents are positive.

Chen et al., "Deep hierarchical multi-label classification of chest X-ray images" (MIDL 2019), and Pham et al.,
"Interpreting chest X-rays via CNNs that exploit hierarchical disease dependencies and uncertainty labels"
(Neurocomputing 2021), who topped the CheXpert leaderboard with it. Each output ``z_c`` estimates
``P(label c | its parents positive)``, so it is trained only on the samples whose parents are all positive::

    loss_nc = BCE(z_nc, y_nc)   kept where every parent p of c has y_np = 1 (always for a root)

and at inference the marginal is the chain rule, :func:`hierloss.functional.chain_rule_probs` (the layer
:class:`~hierloss.layers.ChainRule`): coherent by construction.

Chen et al. follow this stage with fine-tuning on every sample: BCE of the chain rule's *marginals* against the
targets, :func:`chain_rule_bce_loss` / :class:`ChainRuleBCELoss` (the same head and the same ``ChainRule``
prediction; only the loss changes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hierloss._custom_ops import compiled
from hierloss._hierarchy_module import HierarchyModule
from hierloss._masking import target_mask
from hierloss._reduction import check_reduction, reduce_loss, reduce_valid
from hierloss._validation import (
    as_pos_weight,
    check_pos_weight,
    check_target,
    check_width,
    pos_weight_constant,
    validating,
    values_readable,
)
from hierloss.hierarchy import Hierarchy, check_hierarchy
from hierloss.losses._prelude import prelude
from hierloss.propagation import LevelPlan, chain_rule_bce

__all__ = ["ChainRuleBCELoss", "ConditionalBCELoss", "chain_rule_bce_loss", "conditional_bce_loss"]


def conditional_bce_loss(
    input: Tensor,
    target: Tensor,
    hierarchy: Hierarchy,
    reduction: str = "mean",
    pos_weight: Any = None,
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """BCE with logits, each ``(sample, label)`` term kept only where all of the label's parents have target 1.

    Args:
        input: ``(N, C)`` logits of the *conditional* probabilities ``P(label | parents positive)``.
        target: ``(N, C)`` targets in ``[0, 1]``; a parent counts as positive when its target is above 0.5. NaN and
            ``ignore_index`` entries are left out, and so are the terms of their children (whether the parent is
            positive is unknown there).
        hierarchy: the label hierarchy; its edge tensors are built on every call (:class:`ConditionalBCELoss`
            keeps them in buffers).
        reduction: ``'none'``: the ``(N, C)`` terms, 0 where not kept; ``'sum'``: the sum of the kept terms;
            ``'mean'``: their mean over the kept terms (0 when none is kept).
        pos_weight: ``(C,)`` weight of positive examples per label, as in :class:`torch.nn.BCEWithLogitsLoss`: a
            tensor, a list or NumPy array of ``C`` numbers, or one number for every label.
        ignore_index: a target value (e.g. ``-1``) to leave out.
        validate_args: check target values (see :func:`~hierloss.functional.hbce_loss`); ``False`` never
            synchronises with the device.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> logits = torch.tensor([[2.0, 3.0], [-1.0, 3.0]])
        >>> target = torch.tensor([[1.0, 1.0], [0.0, 1.0]])   # b is left out of sample 1: its parent is 0
        >>> conditional_bce_loss(logits, target, h, reduction="none")
        tensor([[0.1269, 0.0486],
                [0.3133, 0.0000]])
    """
    check_hierarchy(hierarchy)
    check_width(input, hierarchy.num_labels)
    pos_weight = as_pos_weight(pos_weight, hierarchy.labels, input)
    edge_index = hierarchy.edge_index.to(input.device)
    num_parents = _parent_counts(edge_index, hierarchy.num_labels)
    return _conditional_bce_loss(input, target, edge_index, num_parents, reduction, pos_weight, ignore_index,
                                 validate_args, hierarchy.labels)


def _parent_counts(edge_index: Tensor, num_labels: int) -> Tensor:
    """``(C,)`` number of parents of each label."""
    child = edge_index[1]
    return torch.zeros(num_labels, dtype=torch.long, device=child.device).index_add_(0, child, torch.ones_like(child))


def _check_values(input: Tensor, target: Tensor, pos_weight: Tensor | None, ignore_index: float | None,
                  validate_args: bool, labels: tuple[str, ...] | None) -> None:
    """The checks both losses of this module make on every call after the prelude's (values only under
    ``validate_args``)."""
    if pos_weight is not None and pos_weight.shape != (input.shape[1],):
        raise ValueError(f"Expected `pos_weight` of shape ({input.shape[1]},), got {tuple(pos_weight.shape)}")
    if validating(validate_args) and values_readable(target):  # a target batched by vmap cannot be read back
        check_target(target, ignore_index, labels)
        if pos_weight is not None:
            check_pos_weight(pos_weight, labels)


def _conditional_bce_loss(input: Tensor, target: Tensor, edge_index: Tensor, num_parents: Tensor, reduction: str,
                          pos_weight: Tensor | None, ignore_index: float | None, validate_args: bool,
                          labels: tuple[str, ...] | None) -> Tensor:
    """:func:`conditional_bce_loss` on edge tensors (:class:`ConditionalBCELoss` passes its buffers)."""
    with prelude(input, target, reduction) as x:
        _check_values(input, target, pos_weight, ignore_index, validate_args, labels)
        clean, valid = target_mask(target, ignore_index)
        y = clean.to(x.dtype)
        positive = y > 0.5 if valid is None else (y > 0.5) & valid
        parent, child = edge_index[0], edge_index[1]
        # how many of each label's parents are known positive: one gather and one scatter-add over the edges
        positive_parents = torch.zeros_like(x).index_add_(1, child, positive.index_select(1, parent).to(x.dtype))
        kept = positive_parents == num_parents.to(x.dtype)
        if valid is not None:
            kept = kept & valid
        pw = None if pos_weight is None else pos_weight.to(x.dtype)
        loss = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pw)
        loss = torch.where(kept, loss, 0.0)
        return reduce_loss(loss, reduction, kept)


class ConditionalBCELoss(HierarchyModule):
    """Conditional (chain-rule) BCE: each label trained only where all of its parents are positive;
    ``loss(logits, target)``.

    Predict with the chain rule: ``probs = ChainRule(hierarchy)(logits)``
    (:class:`~hierloss.layers.ChainRule`), coherent by construction. See :func:`conditional_bce_loss`.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        reduction: ``'mean'`` (over the kept terms) | ``'sum'`` | ``'none'`` (``(N, C)``).
        pos_weight: ``(C,)`` positive-class weights (checked: finite, ``>= 0``).
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values in ``forward``; ``False`` never synchronises with the device.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import ChainRule, ConditionalBCELoss, Hierarchy
        >>> h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
        >>> criterion, marginals = ConditionalBCELoss(h), ChainRule(h)
        >>> logits = torch.randn(8, 3, requires_grad=True)
        >>> criterion(logits, torch.tensor([[1.0, 1.0, 0.0]]).expand(8, 3)).backward()
        >>> probs = marginals(logits)  # P(Cardiomegaly) = P(Cardiomegaly | Cardiac) · P(Cardiac)
    """

    num_parents: Tensor
    pos_weight: Tensor | None

    def __init__(self, hierarchy: Hierarchy, reduction: str = "mean", pos_weight: Tensor | None = None,
                 ignore_index: float | None = None, validate_args: bool = True) -> None:
        super().__init__(hierarchy)
        self.reduction = check_reduction(reduction)
        pos_weight = pos_weight_constant(pos_weight, hierarchy.labels)
        self.register_buffer("num_parents", _parent_counts(self.edge_index, hierarchy.num_labels), persistent=False)
        self.register_buffer("pos_weight", pos_weight)
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` conditional logits) against ``target`` (``(N, C)``)."""
        self._check_width(input, matrix=True)
        return _conditional_bce_loss(input, target, self.edge_index, self.num_parents, self.reduction,
                                     self.pos_weight, self.ignore_index, self.validate_args, self.hierarchy.labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduction={self.reduction!r}"


def chain_rule_bce_loss(
    input: Tensor,
    target: Tensor,
    hierarchy: Hierarchy,
    reduction: str = "mean",
    pos_weight: Any = None,
    ignore_index: float | None = None,
    validate_args: bool = True,
) -> Tensor:
    """BCE of the chain rule's marginals against the targets, on every sample: the fine-tuning stage of
    conditional training.

    ``P = chain_rule_probs(input, hierarchy)`` (:func:`~hierloss.functional.chain_rule_probs`: on a tree the product
    of the conditionals along the path, on a DAG the conditional times the smallest parent marginal) and::

        loss_nc = −[pos_weight_c · y_nc · log P_nc + (1 − y_nc) · log(1 − P_nc)]

    computed in log space (``log P`` and ``log(1 − P)`` are carried level by level with ``logsigmoid`` and
    ``logaddexp``), so it is finite with finite gradients however small or close to 1 a marginal gets; no clamp.
    Without edges it is :func:`torch.nn.functional.binary_cross_entropy_with_logits`. Unlike
    :func:`conditional_bce_loss`, no term is dropped for a negative parent: a label's marginal is trained on every
    sample, and its gradient reaches its ancestors' logits through the chain rule. Targets should follow the
    true-path rule (``hierarchy.propagate(y)``): a positive child under a negative parent cannot be fitted, since the
    chain rule keeps ``P(child) <= P(parent)``.

    Args:
        input: ``(N, C)`` logits of the conditional probabilities ``P(label | parents positive)``, as for
            :func:`conditional_bce_loss`.
        target: ``(N, C)`` targets in ``[0, 1]`` (soft targets allowed); NaN and ``ignore_index`` entries are left
            out (only their own term: the marginal of a child of an unknown parent is still known).
        hierarchy: the label hierarchy; its level plan is built on every call (:class:`ChainRuleBCELoss` keeps it
            in buffers).
        reduction: ``'none'``: the ``(N, C)`` terms, 0 where left out; ``'sum'``; ``'mean'`` over the terms not left
            out.
        pos_weight: ``(C,)`` weight of positive examples per label, as in :class:`torch.nn.BCEWithLogitsLoss`: a
            tensor, a list or NumPy array of ``C`` numbers, or one number for every label.
        ignore_index: a target value (e.g. ``-1``) to leave out.
        validate_args: check target values (see :func:`~hierloss.functional.hbce_loss`); ``False`` never
            synchronises with the device.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> logits = torch.tensor([[0.0, 0.0]])          # marginals 0.5 and 0.5 · 0.5
        >>> chain_rule_bce_loss(logits, torch.tensor([[1.0, 0.0]]), h, reduction="none")  # -log 0.5, -log 0.75
        tensor([[0.6931, 0.2877]])
    """
    check_hierarchy(hierarchy)
    check_width(input, hierarchy.num_labels)
    pos_weight = as_pos_weight(pos_weight, hierarchy.labels, input)
    return _chain_rule_bce_loss(input, target, LevelPlan.build(hierarchy, "parents", input.device), reduction,
                                pos_weight, ignore_index, validate_args, hierarchy.labels)


def _chain_rule_bce_loss(input: Tensor, target: Tensor, plan: LevelPlan, reduction: str,
                         pos_weight: Tensor | None, ignore_index: float | None, validate_args: bool,
                         labels: tuple[str, ...] | None) -> Tensor:
    """:func:`chain_rule_bce_loss` on a downward plan (:class:`ChainRuleBCELoss` passes its buffers)."""
    with prelude(input, target, reduction) as x:
        _check_values(input, target, pos_weight, ignore_index, validate_args, labels)
        pw = None if pos_weight is None else pos_weight.to(x.dtype)
        if compiled():  # under torch.compile: this code as one operator (hierloss.losses._compiled)
            import hierloss.losses._compiled as _compiled

            return _compiled.chain_rule_bce_loss(x, target, plan, reduction, pw, ignore_index)
        clean, valid = target_mask(target, ignore_index)
        return reduce_valid(chain_rule_bce(x, clean.to(x.dtype), plan, pw), reduction, valid)


class ChainRuleBCELoss(HierarchyModule):
    """BCE of the chain rule's marginals on every sample (the fine-tuning stage of conditional training);
    ``loss(logits, target)``.

    Conditional training in two stages (Chen et al., MIDL 2019): train the head with :class:`ConditionalBCELoss`,
    then fine-tune the same head with this loss, which scores the marginals that ``ChainRule(hierarchy)`` predicts
    (:class:`~hierloss.layers.ChainRule`) on every sample. See :func:`chain_rule_bce_loss`.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        reduction: ``'mean'`` (over the terms not left out) | ``'sum'`` | ``'none'`` (``(N, C)``).
        pos_weight: ``(C,)`` positive-class weights (checked: finite, ``>= 0``).
        ignore_index: a target value to leave out (NaN targets always are).
        validate_args: check target values in ``forward``; ``False`` never synchronises with the device.

    Shape:
        input, target ``(N, C)``; output scalar, or ``(N, C)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import ChainRule, ChainRuleBCELoss, ConditionalBCELoss, Hierarchy
        >>> h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
        >>> logits = torch.randn(8, 3, requires_grad=True)
        >>> target = torch.tensor([[1.0, 1.0, 0.0]]).expand(8, 3)
        >>> ConditionalBCELoss(h)(logits, target).backward()   # stage 1: conditional training
        >>> ChainRuleBCELoss(h)(logits, target).backward()     # stage 2: fine-tuning on the marginals
        >>> probs = ChainRule(h)(logits)                       # predictions, either stage
    """

    pos_weight: Tensor | None

    def __init__(self, hierarchy: Hierarchy, reduction: str = "mean", pos_weight: Tensor | None = None,
                 ignore_index: float | None = None, validate_args: bool = True) -> None:
        super().__init__(hierarchy)
        self._register_plan("plan", "parents")
        self.reduction = check_reduction(reduction)
        self.register_buffer("pos_weight", pos_weight_constant(pos_weight, hierarchy.labels))
        self.ignore_index = ignore_index
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` (``(N, C)`` conditional logits) against ``target`` (``(N, C)``)."""
        self._check_width(input, matrix=True)
        return _chain_rule_bce_loss(input, target, self._level_plan(), self.reduction, self.pos_weight,
                                    self.ignore_index, self.validate_args, self.hierarchy.labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduction={self.reduction!r}"
