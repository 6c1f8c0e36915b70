"""Label-graph refinement: one learnable message-passing step between labels, after the classifier head.

Srivastava, Gupta & Nath, "Learning Sparse Label Couplings for Multilabel Chest X-Ray Diagnosis"
(arXiv:2511.07801, 2025) refine logits ``z`` with a sparse, L1-regularised label-coupling matrix ``W``::

    z' = z + W σ(z)          (per sample; z'_i = z_i + Σ_{j≠i} W_ij σ(z_j))

``W`` starts at zero, so the module is the identity at initialisation and only learns couplings the data
support; :meth:`LabelGraphRefinement.regularization` returns ``l1 · ‖W‖₁`` to add to the loss. A hierarchy can
restrict the couplings to its edges (both directions: a child informs its parent and vice versa) or to the
ancestor/descendant pairs of its closure; ``W`` is then stored as one weight per allowed pair, ``O(N·P)`` work
instead of ``O(N·C²)``. The diagonal is always 0 (a label does not refine itself). Any loss of
:mod:`hierloss.losses` can then be applied to ``z'``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hierloss._validation import check_width
from hierloss.hierarchy import Hierarchy

__all__ = ["LabelGraphRefinement", "coupling_pairs", "label_graph_refinement"]

SPARSITIES = ("edges", "closure")


def label_graph_refinement(input: Tensor, weight: Tensor, hierarchy: Hierarchy | None = None,
                           sparsity: str = "edges") -> Tensor:
    """Refine logits once through a label-coupling matrix: ``z' = z + W σ(z)``.

    Args:
        input: ``(N, C)`` logits ``z``.
        weight: without a hierarchy, the dense ``(C, C)`` matrix ``W`` (``W[i, j]``: coupling from label ``j``
            into label ``i``; its diagonal is ignored); with one, ``(P,)`` weights of the hierarchy's pairs in
            :func:`coupling_pairs` order (each edge parent ← child, then each edge child ← parent).
        hierarchy: restricts the couplings to the hierarchy's pairs (see ``sparsity``); ``None``: dense ``W``.
        sparsity: ``'edges'`` (the edges, ``P = 2E``) or ``'closure'`` (every ancestor/descendant pair).

    Shape:
        input ``(N, C)``; output ``(N, C)``, the dtype of ``input``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[0.0, 2.0]])
        >>> w = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # label 1 raises label 0
        >>> label_graph_refinement(z, w)
        tensor([[0.8808, 2.0000]])
    """
    pair_index = None if hierarchy is None else coupling_pairs(hierarchy, sparsity).to(input.device)
    return _refine(input, weight, pair_index)


def coupling_pairs(hierarchy: Hierarchy, sparsity: str = "edges") -> Tensor:
    """``(2, P)`` long tensor of the (target, source) label pairs a hierarchy allows: every edge as parent ← child,
    then every edge as child ← parent; with ``sparsity='closure'`` the edges of ``hierarchy.closure()``."""
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"Expected a Hierarchy or None, got {type(hierarchy).__name__}")
    if sparsity not in SPARSITIES:
        raise ValueError(f"`sparsity` must be one of 'edges', 'closure', got {sparsity!r}")
    graph = hierarchy.closure() if sparsity == "closure" else hierarchy
    edge_index = graph.edge_index.to(torch.long).reshape(2, -1)
    return torch.cat([edge_index, edge_index.flip(0)], dim=1)


def _refine(input: Tensor, weight: Tensor, pair_index: Tensor | None) -> Tensor:
    """:func:`label_graph_refinement` with the pairs given (:class:`LabelGraphRefinement` keeps them in a buffer)."""
    check_width(input)
    num_labels = input.shape[1]
    probs = torch.sigmoid(input)
    if pair_index is None:
        if weight.shape != (num_labels, num_labels):
            raise ValueError(f"Expected a dense `weight` of shape ({num_labels}, {num_labels}), got "
                             f"{tuple(weight.shape)}")
        off_diagonal = torch.diagonal_scatter(weight, weight.new_zeros(num_labels))
        return input + probs @ off_diagonal.to(input.dtype).t()
    if weight.shape != (pair_index.shape[1],):
        raise ValueError(f"Expected `weight` of shape ({pair_index.shape[1]},): one per coupling pair of the "
                         f"hierarchy, got {tuple(weight.shape)}")
    messages = probs.index_select(1, pair_index[1]) * weight.to(input.dtype)
    return input.index_add(1, pair_index[0], messages)


class LabelGraphRefinement(nn.Module):
    """A learnable label-coupling layer placed after a classifier head: ``z' = z + W σ(z)``, ``W`` zero-initialised.

    Args:
        num_labels: ``C``, the width of the logits.
        hierarchy: optional; restricts the couplings to the hierarchy's pairs (see ``sparsity``). ``None``: a
            dense ``(C, C)`` ``W`` (``C²`` parameters).
        l1: weight of the L1 penalty returned by :meth:`regularization` (default ``1e-4``, a mild starting point,
            not a tuned value).
        sparsity: ``'edges'`` (couplings along each parent → child edge, both directions; ``2E`` parameters) or
            ``'closure'`` (along every ancestor → descendant pair, both directions).

    Shape:
        input ``(N, C)``; output ``(N, C)``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy, LabelGraphRefinement, ZLPRLoss
        >>> h = Hierarchy.from_dict({"Abnormal": ["Cardiac"], "Cardiac": ["Cardiomegaly"]})
        >>> refine = LabelGraphRefinement(3, hierarchy=h)
        >>> logits = torch.randn(8, 3)
        >>> torch.equal(refine(logits), logits)  # identity at initialisation
        True
        >>> target = torch.randint(0, 2, (8, 3))
        >>> loss = ZLPRLoss()(refine(logits), target) + refine.regularization()
    """

    pair_index: Tensor | None

    def __init__(self, num_labels: int, hierarchy: Hierarchy | None = None, l1: float = 1e-4,
                 sparsity: str = "edges") -> None:
        super().__init__()
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"`num_labels` must be a positive int, got {num_labels!r}")
        if not 0 <= l1 < math.inf:  # comparisons: NaN and inf fail them
            raise ValueError(f"`l1` must be a finite number >= 0, got {l1!r}")
        if sparsity not in SPARSITIES:
            raise ValueError(f"`sparsity` must be one of 'edges', 'closure', got {sparsity!r}")
        pair_index: Tensor | None = None
        if hierarchy is not None:
            pair_index = coupling_pairs(hierarchy, sparsity)
            if hierarchy.num_labels != num_labels:
                raise ValueError(f"`num_labels` is {num_labels} but the hierarchy has {hierarchy.num_labels} labels")
            self.weight = nn.Parameter(torch.zeros(pair_index.shape[1]))
        else:
            self.weight = nn.Parameter(torch.zeros(num_labels, num_labels))
        self.register_buffer("pair_index", pair_index)
        self.num_labels = num_labels
        self.l1 = float(l1)
        self.sparsity = sparsity if hierarchy is not None else None

    def forward(self, input: Tensor) -> Tensor:
        """Refined logits ``z + W σ(z)`` of ``input`` (``(N, C)`` logits)."""
        check_width(input, self.num_labels)
        return _refine(input, self.weight, self.pair_index)

    def regularization(self) -> Tensor:
        """``l1 · ‖W‖₁``, the penalty to add to the training loss (a 0-dim tensor)."""
        return self.l1 * self.weight.abs().sum()

    def coupling_matrix(self) -> Tensor:
        """The dense ``(C, C)`` matrix ``W`` (``W[i, j]``: coupling from label ``j`` into ``i``), for inspection."""
        c = self.num_labels
        if self.pair_index is None:
            return torch.diagonal_scatter(self.weight, self.weight.new_zeros(c))
        dense = self.weight.new_zeros(c * c)
        return dense.index_put((self.pair_index[0] * c + self.pair_index[1],), self.weight, accumulate=True).view(c, c)

    def extra_repr(self) -> str:
        return (f"num_labels={self.num_labels}, couplings={self.weight.numel()}, sparsity={self.sparsity!r}, "
                f"l1={self.l1}")
