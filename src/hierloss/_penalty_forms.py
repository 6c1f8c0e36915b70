"""The penalty forms of the hierarchy loss, each defined once: its value and its derivatives.

A form scores one parent → child edge from the parent's value ``v_p`` and the child's value ``v_c`` (logits or
probabilities, see :attr:`PenaltyForm.space`). Every consumer reads :data:`FORMS`:

* the plain-PyTorch reference (:func:`hierloss.losses.hierarchy_penalty.hierarchy_penalty` and HBCE's
  ``'reference'`` backend) evaluates :meth:`PenaltyForm.value` and lets autograd differentiate it;
* the fused HBCE kernel (:mod:`hierloss.losses._hbce_backend`) evaluates the same values and writes the gradient
  with the forms' derivatives (:attr:`PenaltyForm.slope` of a difference form, :meth:`PenaltyForm.value_and_partials`
  of a pair form);
* the metrics' violation test is :func:`violated`, which is also the ``'hard'`` form's indicator.

There are two kinds of form:

* **difference forms** depend on the clamped gap ``h = max(0, v_c − v_p)`` only: ``penalty = f(h)`` with
  ``f(0) = 0``, and ``∂penalty/∂v_c = f'(h) = −∂penalty/∂v_p``. The fused kernel computes every gap of a batch
  with one matrix product, so these are the fast forms. ``f'(0)`` is 0 (no gradient on a tie), matching the
  autograd of ``relu``. Each is positively homogeneous, ``f(a·h) = a**degree · f(h)`` for ``a >= 0``, so a kernel
  may fold a non-negative edge weight into the gap (``w · f(h) = f(w**(1/degree) · h)``).
* **pair forms** read both values: one function returns ``penalty = g(v_p, v_c)`` and, when asked, its partial
  derivatives (computed from the same intermediates), or ``None`` for a form without gradient.

Adding a form is one entry in :data:`FORMS` (and the tests of ``tests/test_penalty_forms.py`` check its
derivatives against autograd of its value).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from hierloss._reduction import check_reduction

__all__ = ["CLIP", "DEFAULT_MODE", "DEFAULT_TEMPERATURE", "EDGE_REDUCTIONS", "FORMS", "MODES", "PenaltyForm",
           "PenaltyMode", "PenaltySettings", "check_penalty_args", "edge_penalty", "is_real", "penalty_space",
           "resolve_scale", "resolve_settings", "violated"]

#: Probabilities are clipped to ``[CLIP, 1 − CLIP]`` before their logit is taken (the reference's clipping).
CLIP = 1e-7
#: Default temperature of ``mode='soft'`` (see ``docs/hbce.md``).
DEFAULT_TEMPERATURE = 0.1

GapFn = Callable[[Tensor], Tensor]
#: ``(v_parent, v_child, threshold, temperature, with_partials) -> (value, (∂/∂v_parent, ∂/∂v_child) or None)``
PairFn = Callable[[Tensor, Tensor, float, float, bool], tuple[Tensor, tuple[Tensor, Tensor] | None]]


def violated(v_parent: Tensor, v_child: Tensor, threshold: float | None) -> Tensor:
    """Bool: whether an edge is violated.

    With a ``threshold`` the reference's test, strict on both sides: ``v_parent < t and v_child > t`` (the
    ``'hard'`` form's indicator). With ``threshold=None``: ``v_child > v_parent``, exactly where every difference
    form is positive (violated at *some* threshold). NaN values never count as a violation.
    """
    if threshold is None:
        return v_child > v_parent
    return (v_parent < threshold) & (v_child > threshold)


@dataclass(frozen=True)
class PenaltyForm:
    """One penalty form: how it scores an edge and how that score changes with the parent and child values.

    Attributes:
        name: the ``mode`` string users pass.
        space: what the form reads: ``'logits'`` or ``'probabilities'``.
        default_scale: λ when ``scale=None``.
        default_edge_reduction: ``'sum'`` or ``'mean'`` over edges when ``edge_reduction=None``.
        gap: difference forms only: ``f(h)`` of the clamped gap ``h >= 0``.
        slope: difference forms only: ``f'(h)``, the derivative with respect to ``v_child``.
        pair: pair forms only: ``(v_parent, v_child, threshold, temperature, with_partials)`` to
            ``(g, (∂g/∂v_parent, ∂g/∂v_child))``; the partials are ``None`` when not asked for or when the form
            has no gradient.
        has_gradient: whether the form trains (the reference's ``'hard'`` indicator does not).
        degree: difference forms only: ``k`` with ``f(a·h) = a**k · f(h)`` for every ``a >= 0``.
    """

    name: str
    space: Literal["logits", "probabilities"]
    default_scale: float = 1.0
    default_edge_reduction: Literal["sum", "mean"] = "mean"
    gap: GapFn | None = None
    slope: GapFn | None = None
    pair: PairFn | None = None
    has_gradient: bool = True
    degree: int | None = None

    def __post_init__(self) -> None:
        if (self.gap is None) == (self.pair is None):
            raise ValueError(f"penalty form {self.name!r}: give either gap (a difference form) or pair, not both")
        if self.gap is not None and (self.slope is None or self.degree is None):
            raise ValueError(f"difference form {self.name!r} needs its slope and its degree")

    @property
    def is_difference(self) -> bool:
        """Whether the form depends on ``v_child − v_parent`` only."""
        return self.gap is not None

    def value(self, v_parent: Tensor, v_child: Tensor, threshold: float, temperature: float) -> Tensor:
        """Per-edge penalty for matching-shape parent and child values (differentiable by autograd)."""
        if self.gap is not None:
            return self.gap(torch.relu(v_child - v_parent))
        assert self.pair is not None
        return self.pair(v_parent, v_child, threshold, temperature, False)[0]

    def value_and_partials(self, v_parent: Tensor, v_child: Tensor, threshold: float,
                           temperature: float) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """The value and ``(∂penalty/∂v_parent, ∂penalty/∂v_child)``; ``None`` when the gradient is zero everywhere."""
        if self.gap is not None:
            assert self.slope is not None
            h = torch.relu(v_child - v_parent)
            s = self.slope(h)
            return self.gap(h), (-s, s)
        assert self.pair is not None
        return self.pair(v_parent, v_child, threshold, temperature, self.has_gradient)

    def partials(self, v_parent: Tensor, v_child: Tensor, threshold: float,
                 temperature: float) -> tuple[Tensor, Tensor] | None:
        """``(∂penalty/∂v_parent, ∂penalty/∂v_child)``; ``None`` when the gradient is zero everywhere."""
        return self.value_and_partials(v_parent, v_child, threshold, temperature)[1]


def _soft(v_parent: Tensor, v_child: Tensor, threshold: float, temperature: float,
          with_partials: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    a = torch.sigmoid((threshold - v_parent) / temperature)
    b = torch.sigmoid((v_child - threshold) / temperature)
    value = a * b
    if not with_partials:
        return value, None
    return value, (-(value * (1 - a)) / temperature, (value * (1 - b)) / temperature)


def _hard(v_parent: Tensor, v_child: Tensor, threshold: float, temperature: float,
          with_partials: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    return violated(v_parent, v_child, threshold).to(v_parent.dtype), None


def _identity(h: Tensor) -> Tensor:
    return h


def _square(h: Tensor) -> Tensor:
    return h * h


def _twice(h: Tensor) -> Tensor:
    return h * 2


#: Every penalty form, by ``mode`` name. The first trainable one is the default.
FORMS: dict[str, PenaltyForm] = {
    form.name: form
    for form in (
        # max(0, z_child − z_parent) on logits: positive on exactly the edges of 'hinge' (σ is increasing), but its
        # gradient does not vanish where the probabilities saturate. The default (λ = 0.1, docs/hbce.md).
        PenaltyForm("logit_hinge", "logits", default_scale=0.1, gap=_identity, slope=torch.sign, degree=1),
        # max(0, p_child − p_parent): HMCN-style hierarchical violation.
        PenaltyForm("hinge", "probabilities", gap=_identity, slope=torch.sign, degree=1),
        # max(0, p_child − p_parent)²
        PenaltyForm("squared_hinge", "probabilities", gap=_square, slope=_twice, degree=2),
        # σ((t − p_parent)/τ) · σ((p_child − t)/τ): tends to the hard indicator as τ → 0.
        PenaltyForm("soft", "probabilities", pair=_soft),
        # 1[p_parent < t and p_child > t]: the reference (Asadi et al. 2025); no gradient, summed over edges.
        PenaltyForm("hard", "probabilities", default_edge_reduction="sum", pair=_hard, has_gradient=False),
    )
}
MODES: tuple[str, ...] = tuple(FORMS)
#: The name of a penalty form, as ``mode=`` takes it.
PenaltyMode = Literal["logit_hinge", "hinge", "squared_hinge", "soft", "hard"]
#: Default penalty form, chosen from the trade-off experiments in ``docs/hbce.md``.
DEFAULT_MODE: PenaltyMode = "logit_hinge"


def penalty_space(input: Tensor, form: PenaltyForm, from_logits: bool) -> Tensor:
    """The values ``form`` reads: logits or probabilities of ``input``.

    Probabilities given to a logit form are clipped to ``[CLIP, 1 − CLIP]`` before their logit is taken.
    """
    if form.space == "logits":
        return input if from_logits else torch.logit(input, eps=CLIP)
    return torch.sigmoid(input) if from_logits else input


def edge_penalty(values: Tensor, edge_index: Tensor, weight: Tensor, form: PenaltyForm, threshold: float,
                 temperature: float) -> Tensor:
    """``Σ_e weight_e · penalty_e`` per sample, in plain PyTorch: the reference every faster path is tested against.

    Args:
        values: ``(N, C)`` values in the form's space (:func:`penalty_space`).
        edge_index: ``(2, E)`` long, parents in row 0.
        weight: ``(E,)`` effective edge weights.

    Returns:
        ``(N,)``; with no edges, zeros that still depend on ``values`` (so that backward works).
    """
    terms = form.value(values.index_select(1, edge_index[0]), values.index_select(1, edge_index[1]), threshold,
                       temperature)
    return terms @ weight


# -------------------------------------------------------------- the forms' hyper-parameters, checked once
EDGE_REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def is_real(value: object) -> bool:
    """A real number that is not a bool: Python ``int``/``float`` and NumPy scalars."""
    return isinstance(value, (int, float, numbers.Real)) and not isinstance(value, (bool, np.bool_))


def resolve_scale(form: PenaltyForm, scale: float | None) -> float:
    """The effective λ: ``scale``, or the form's default (``form.default_scale``) when ``None``.

    Raises:
        ValueError: if ``scale`` is negative, NaN or infinite (a negative λ would reward violations).
    """
    if scale is None:
        return form.default_scale
    # comparisons only (no math.isfinite): they also hold for the symbolic floats torch.compile traces when a
    # scale changes between calls; NaN and inf fail them
    if not is_real(scale) or not 0 <= scale < math.inf:
        raise ValueError(f"scale must be a finite number >= 0 (or None for the mode's default), got {scale!r}")
    return float(scale)


def check_penalty_args(mode: PenaltyMode | str, threshold: float, temperature: float,
                       edge_reduction: str | None) -> tuple[PenaltyForm, str]:
    """Validate the penalty's hyper-parameters; return the form of ``mode`` and the effective edge reduction.

    ``edge_reduction=None`` means the form's default: ``'sum'`` for ``'hard'`` (the reference) and ``'mean'``
    for the trainable modes.
    """
    if not isinstance(mode, str) or mode not in FORMS:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    if not (is_real(threshold) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if not (is_real(temperature) and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    form = FORMS[mode]
    if edge_reduction is None:
        return form, form.default_edge_reduction
    if edge_reduction not in EDGE_REDUCTIONS:
        raise ValueError(f"edge_reduction must be 'sum', 'mean' or None, got {edge_reduction!r}")
    return form, edge_reduction


@dataclass(frozen=True)
class PenaltySettings:
    """The hyper-parameters of a hierarchy loss, checked once by :func:`resolve_settings` and frozen.

    A module resolves them in ``__init__`` (and again when one of its attributes is assigned) and passes this one
    object on every call, so that ``forward`` re-checks nothing.

    Attributes:
        form: the penalty form of ``mode`` (:data:`~hierloss._penalty_forms.FORMS`).
        scale: λ, the mode's default already substituted for ``None``.
        edge_reduction: ``'sum'`` or ``'mean'`` over edges, the form's default already substituted for ``None``.
        threshold: decision threshold of ``'hard'`` and ``'soft'``.
        temperature: temperature of ``'soft'``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over samples.
        from_logits: whether the input holds logits.
        validate_args: whether ``forward`` checks values.
        ignore_index: the target value to leave out (HBCE only).
    """

    form: PenaltyForm
    scale: float
    edge_reduction: str
    threshold: float
    temperature: float
    reduction: str
    from_logits: bool
    validate_args: bool
    ignore_index: float | None = None

    def edge_scale(self, num_edges: int) -> float:
        """The factor on every ``w_e``: ``λ / E`` with ``edge_reduction='mean'`` (``λ`` without edges), else ``λ``."""
        return self.scale / num_edges if self.edge_reduction == "mean" and num_edges else self.scale


def resolve_settings(mode: PenaltyMode | str, scale: float | None, threshold: float, temperature: float,
                     edge_reduction: str | None, reduction: str, from_logits: bool = True,
                     validate_args: bool = True, ignore_index: float | None = None) -> PenaltySettings:
    """Check every hyper-parameter of a hierarchy loss once and freeze them (see :class:`PenaltySettings`).

    Raises:
        ValueError: naming the first bad value (mode, threshold, temperature, edge reduction, scale, reduction).
    """
    form, effective_edge_reduction = check_penalty_args(mode, threshold, temperature, edge_reduction)
    return PenaltySettings(form, resolve_scale(form, scale), effective_edge_reduction, float(threshold),
                           float(temperature), check_reduction(reduction), bool(from_logits), bool(validate_args),
                           ignore_index)
