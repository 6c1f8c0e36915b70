"""The hierarchy penalty term alone: ``Σ_edges w_e · penalty(v_parent, v_child)``, addable to any base loss."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hierloss._penalty_forms import (
    DEFAULT_MODE,
    DEFAULT_TEMPERATURE,
    PenaltyMode,
    PenaltySettings,
    check_penalty_args,
    edge_penalty,
    penalty_space,
    resolve_settings,
)
from hierloss._reduction import reduce_loss
from hierloss._validation import check_probabilities, check_width, validating
from hierloss.hierarchy import Hierarchy
from hierloss.losses._edges import EdgeModule, resolve_edges
from hierloss.losses._prelude import prelude

__all__ = ["HierarchyPenalty", "hierarchy_penalty"]


def edge_terms(v_parent: Tensor, v_child: Tensor, mode: str, threshold: float = 0.5,
               temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """Per-edge penalty values from parent and child values of any matching shapes (no weights, no reduction).

    The values are logits for ``'logit_hinge'`` and probabilities for the other modes:

    * ``'hard'``: ``1[p_parent < t and p_child > t]`` (the reference; no gradient);
    * ``'soft'``: ``σ((t − p_parent)/τ) · σ((p_child − t)/τ)``, which tends to the hard indicator as ``τ → 0``;
    * ``'hinge'``: ``max(0, p_child − p_parent)`` (HMCN-style hierarchical violation);
    * ``'squared_hinge'``: ``max(0, p_child − p_parent)²``;
    * ``'logit_hinge'``: ``max(0, z_child − z_parent)`` on *logits* ``z``: positive on exactly the same edges as
      ``'hinge'`` (the sigmoid is monotone), but its gradient does not vanish where the probabilities saturate.

    The hinges have zero gradient on a tie (``v_child == v_parent``).

    Example:
        >>> import torch
        >>> edge_terms(torch.tensor([0.2, 0.9]), torch.tensor([0.7, 0.3]), "hinge")
        tensor([0.5000, 0.0000])
    """
    form, _ = check_penalty_args(mode, threshold, temperature, None)
    return form.value(v_parent, v_child, threshold, temperature)


def hierarchy_penalty(
    input: Tensor,
    hierarchy: Hierarchy,
    edge_weight: Any = 1.0,
    scale: float | None = None,
    mode: PenaltyMode = DEFAULT_MODE,
    threshold: float = 0.5,
    temperature: float = DEFAULT_TEMPERATURE,
    from_logits: bool = True,
    edge_reduction: str | None = None,
    reduction: str = "mean",
    closure: bool = False,
    validate_args: bool = True,
) -> Tensor:
    """Hierarchy penalty ``Σ_e scale · w_e · penalty_e`` per sample (``edge_reduction='mean'`` divides by ``E``).

    Args:
        input: ``(N, C)`` logits (``from_logits=True``) or probabilities.
        hierarchy: the label hierarchy; its edge tensors are built (and copied to ``input``'s device) on every
            call: in a training loop use :class:`HierarchyPenalty`, which keeps them in buffers.
        edge_weight: the weights ``w_e``: a number or 0-d tensor, a length-``E`` sequence, NumPy array or tensor, a
            ``{(parent, child): value}`` mapping or an :class:`~hierloss.edge_weights.EdgeWeights` (see
            :func:`~hierloss.functional.hbce_loss`).
        scale: multiplies every weight (the paper's λ); ``None`` is the mode's default: 0.1 for ``'logit_hinge'``,
            1.0 for the others.
        mode: ``'logit_hinge'`` (default), ``'hinge'``, ``'squared_hinge'``, ``'soft'`` or ``'hard'`` (see
            :func:`edge_terms`).
        threshold: decision threshold of ``'hard'`` and ``'soft'``.
        temperature: temperature of ``'soft'``.
        from_logits: whether ``input`` holds logits.
        edge_reduction: ``'sum'`` or ``'mean'`` over edges; ``None`` is ``'sum'`` for ``'hard'`` (the
            reference) and ``'mean'`` otherwise.
        reduction: ``'mean'`` | ``'sum'`` over samples, or ``'none'`` for the ``(N,)`` vector.
        closure: penalise every (ancestor, descendant) pair of ``hierarchy.closure()`` instead of direct edges.
        validate_args: with ``from_logits=False``, check that ``input`` holds probabilities in ``[0, 1]`` and
            raise a ``ValueError`` naming the first offending column and value (a device synchronisation on a
            GPU); ``False`` checks no value and never synchronises. Skipped under ``torch.compile`` and for an
            input batched by ``torch.func.vmap``.

    Plain PyTorch throughout: autograd, ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``) and
    ``torch.compile`` work.

    Shape:
        input ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> probs = torch.tensor([[0.2, 0.9], [0.9, 0.2]])
        >>> hierarchy_penalty(probs, h, scale=1.0, mode="hinge", from_logits=False, reduction="none")
        tensor([0.7000, 0.0000])
    """
    edge_index, weight = resolve_edges(hierarchy, edge_weight, closure)
    check_width(input, hierarchy.num_labels)
    settings = resolve_settings(mode, scale, threshold, temperature, edge_reduction, reduction, from_logits,
                                validate_args)
    if not from_logits and validating(validate_args):
        check_probabilities(input, hierarchy.labels)
    return _hierarchy_penalty(input, edge_index.to(input.device), weight.to(input.device), settings)


def _hierarchy_penalty(input: Tensor, edge_index: Tensor, edge_weight: Tensor, settings: PenaltySettings) -> Tensor:
    """:func:`hierarchy_penalty` on edge tensors and checked settings (:class:`HierarchyPenalty` passes its
    buffers), values unchecked."""
    form = settings.form
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_weight.shape != (edge_index.shape[1],):
        raise ValueError(f"Expected edge_index (2, E) and edge_weight (E,), got {tuple(edge_index.shape)} and "
                         f"{tuple(edge_weight.shape)}")
    with prelude(input, None, settings.reduction) as x:
        weight = edge_weight.to(x.dtype) * settings.edge_scale(edge_index.shape[1])
        per_sample = edge_penalty(penalty_space(x, form, settings.from_logits), edge_index, weight, form,
                                  settings.threshold, settings.temperature)
    return reduce_loss(per_sample, settings.reduction)


class HierarchyPenalty(EdgeModule):
    """The hierarchy penalty term as a module: ``loss = base_loss(logits, y) + HierarchyPenalty(h)(logits)``.

    The penalty depends on predictions only. Its constants (``edge_index``, ``edge_weight``) are buffers, so
    ``.to()``, ``.cuda()``, ``.half()`` and ``state_dict()`` work; ``forward`` never synchronises with the host.
    A state dict saved over another hierarchy is refused when loaded.

    Args:
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``, ``E = hierarchy.num_edges``.
        edge_weight: the weights ``w_e``: a number or 0-d tensor, a length-``E`` sequence, NumPy array or tensor, a
            ``{(parent, child): value}`` mapping or an :class:`~hierloss.edge_weights.EdgeWeights`.
        scale: λ, multiplies every penalty; ``None``: the mode's default (0.1 for ``'logit_hinge'``, else 1.0).
        mode: see :func:`hierarchy_penalty`.
        threshold: see :func:`hierarchy_penalty`.
        temperature: see :func:`hierarchy_penalty`.
        from_logits: whether the module receives logits.
        closure: penalise every (ancestor, descendant) pair instead of direct edges only.
        edge_reduction: see :func:`hierarchy_penalty`.
        reduction: see :func:`hierarchy_penalty`.
        validate_args: see :func:`hierarchy_penalty`.

    Shape:
        input ``(N, C)``; output scalar, or ``(N,)`` with ``reduction='none'``.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b", "c"]})
        >>> penalty = HierarchyPenalty(h, scale=0.5)
        >>> logits = torch.tensor([[-2.0, 3.0, -1.0]], requires_grad=True)
        >>> loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros(1, 3)) + penalty(logits)
        >>> loss.backward()
    """

    def __init__(
        self,
        hierarchy: Hierarchy,
        edge_weight: Any = 1.0,
        scale: float | None = None,
        mode: PenaltyMode = DEFAULT_MODE,
        threshold: float = 0.5,
        temperature: float = DEFAULT_TEMPERATURE,
        from_logits: bool = True,
        closure: bool = False,
        edge_reduction: str | None = None,
        reduction: str = "mean",
        validate_args: bool = True,
    ) -> None:
        arguments: dict[str, Any] = dict(mode=mode, scale=scale, threshold=threshold, temperature=temperature,
                                         edge_reduction=edge_reduction, reduction=reduction,
                                         from_logits=from_logits, validate_args=validate_args)
        super().__init__(hierarchy, edge_weight, closure, arguments)

    def forward(self, input: Tensor) -> Tensor:
        """Penalty of ``input`` (``(N, C)`` logits or probabilities)."""
        self._check_width(input, matrix=True)
        settings = self._settings
        if not settings.from_logits and validating(settings.validate_args):
            check_probabilities(input, self.hierarchy.labels)  # here with the labels' names
        return _hierarchy_penalty(input, self.edge_index, self.edge_weight, settings)

    def extra_repr(self) -> str:
        return (f"num_labels={self.hierarchy.num_labels}, num_edges={self.edge_index.shape[1]}, mode={self.mode!r}, "
                f"scale={self.scale}, edge_reduction={self._settings.edge_reduction!r}")
