"""Recipes: the approaches hierloss supports, each as a training criterion plus a prediction head, in one table.

A loss alone does not say how to predict: MCLoss trains, ``MaxConstraint`` predicts; conditional training predicts
through the chain rule; BCE's outputs are coherent only after ``coherent``. A recipe says both, and the stages when
the criterion changes during training (conditional training, then fine-tuning on the chain rule's marginals):

>>> import torch
>>> from hierloss import Hierarchy, recipes
>>> h = Hierarchy.from_dict({"a": ["b", "c"]})
>>> recipe = recipes.get("mcloss", h)                     # recipe.to(device) moves its modules
>>> logits, target = torch.randn(4, 3), torch.tensor([[1.0, 1.0, 0.0]]).expand(4, 3)
>>> loss = recipe.criterion(logits, target)               # train with this
>>> scores = recipe.head(logits)                          # report these: coherent by construction here
>>> recipe.coherent_by_construction
True

:data:`RECIPES` is the table (names in :func:`names`); :func:`get` builds one for a hierarchy. Every recipe whose
head is the plain sigmoid also exists with ``coherent`` as its head: ``get("hbce+coherent", h)``. The ``hierloss
demo`` command, the benchmarks and the CheXpert example all build their losses and heads from this table, and the
documentation's "choosing an approach" table is tested against it.

``import hierloss.recipes`` does not import torch (so ``hierloss demo --help`` stays quick); :func:`get` does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

    from hierloss.hierarchy import Hierarchy
    from hierloss.recipes.criteria import PenalisedLoss, StagedLoss

__all__ = [
    "COHERENT",
    "HEADS",
    "RECIPES",
    "HeadName",
    "PenalisedLoss",
    "Recipe",
    "RecipeSpec",
    "StageSpec",
    "StagedLoss",
    "get",
    "names",
    "spec",
]

HeadName = Literal["sigmoid", "coherent", "max-constraint", "chain-rule"]

#: What each head computes from the logits ``x``, as code.
HEADS: Mapping[str, str] = MappingProxyType({
    "sigmoid": "torch.sigmoid(x)",
    "coherent": "coherent(torch.sigmoid(x), h)",
    "max-constraint": "MaxConstraint(h)(torch.sigmoid(x))",
    "chain-rule": "ChainRule(h)(x)",
})
#: The suffix that puts ``coherent`` after a recipe whose head is the sigmoid: ``'hbce' + COHERENT``.
COHERENT = "+coherent"

Builder = Callable[["Hierarchy", bool], "nn.Module"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of a recipe's training: the criterion, and the share of the epochs it trains.

    Attributes:
        criterion: what it trains with, as code (``h`` is the hierarchy), e.g. ``"HBCELoss(h, mode='hard')"``.
        share: the share of the epochs, at the end, that this stage trains (see :meth:`RecipeSpec.stage_epochs`);
            ``None`` for the first stage, which trains the epochs the others leave.
        build: ``build(hierarchy, validate_args)`` returns the criterion module.
    """

    criterion: str
    share: float | None
    build: Builder = field(repr=False, compare=False)


@dataclass(frozen=True)
class RecipeSpec:
    """A recipe as data: its name, how it trains and how it predicts. :func:`get` builds it for a hierarchy.

    Attributes:
        name: the key in :data:`RECIPES` (or ``NAME+coherent``).
        title: the display name: ``"BCE + coherent"``, ``"MCLoss"``, ...
        description: one line on what it is.
        head: what turns logits into the scores you report: ``'sigmoid'``, ``'coherent'`` (``coherent`` after the
            sigmoid), ``'max-constraint'`` (C-HMCNN's ``MaxConstraint`` after the sigmoid) or ``'chain-rule'``
            (``ChainRule`` on the conditional logits); :data:`HEADS` says each as code.
        stages: the training criteria in order; one for most recipes.
        training: the recipe whose training this one is (itself, or ``NAME`` for ``NAME+coherent``): recipes with
            the same ``training`` train the same model and differ only in the head.
    """

    name: str
    title: str
    description: str
    head: HeadName
    stages: tuple[StageSpec, ...]
    training: str

    @property
    def coherent_by_construction(self) -> bool:
        """Whether the head's scores never put a child above one of its parents, at any threshold (every head but
        the plain sigmoid)."""
        return self.head != "sigmoid"

    def stage_epochs(self, epochs: int) -> tuple[int, ...]:
        """How many of ``epochs`` each stage trains, in order.

        A later stage with share ``s`` trains the last ``round(s · epochs)`` epochs (at least one), leaving at least
        one to the first stage; so of a single epoch every later stage gets none. ``'conditional-ft'``: the last
        fifth fine-tunes (13 of 67 epochs, 25 of 123, 1 of 2 to 7).

        Raises:
            ValueError: ``epochs`` is below 1.

        Example:
            >>> spec("conditional-ft").stage_epochs(123)
            (98, 25)
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        counts: list[int] = []
        left = epochs
        for stage in reversed(self.stages[1:]):
            share = stage.share if stage.share is not None else 0.0
            count = max(0, min(max(1, round(share * epochs)), left - 1))
            counts.append(count)
            left -= count
        return (left, *reversed(counts))

    def stage_at(self, epoch: int, epochs: int) -> int:
        """The stage that trains epoch ``epoch`` (0-based) of ``epochs``.

        Raises:
            ValueError: ``epoch`` is not in ``[0, epochs)``.
        """
        if not 0 <= epoch < epochs:
            raise ValueError(f"epoch must be in [0, {epochs}), got {epoch}")
        end = 0
        for index, count in enumerate(self.stage_epochs(epochs)):
            end += count
            if epoch < end:
                return index
        raise AssertionError("unreachable: the stages cover every epoch")  # pragma: no cover


def _bce(h: Hierarchy, validate_args: bool) -> nn.Module:
    from torch import nn

    return nn.BCEWithLogitsLoss()


def _loss(name: str, hierarchy: bool = True, **options: Any) -> Builder:
    """A builder of ``hierloss.losses.<name>(h, validate_args=..., **options)`` (without ``h`` when not
    ``hierarchy``); the losses are imported when a recipe is built, not with the table."""

    def build(h: Hierarchy, validate_args: bool) -> nn.Module:
        loss: nn.Module = getattr(importlib.import_module("hierloss.losses"), name)(
            *((h,) if hierarchy else ()), validate_args=validate_args, **options)
        return loss

    return build


def _bce_plus_penalty(h: Hierarchy, validate_args: bool) -> nn.Module:
    from hierloss.recipes.criteria import PenalisedLoss

    return PenalisedLoss(_bce(h, validate_args), _loss("HierarchyPenalty")(h, validate_args))


def _one(criterion: str, build: Builder) -> tuple[StageSpec, ...]:
    return (StageSpec(criterion, None, build),)


def _with_coherent(base: RecipeSpec) -> RecipeSpec:
    """``base`` with ``coherent`` as its head (``base`` must have the sigmoid head)."""
    return replace(base, name=base.name + COHERENT, title=f"{base.title} + coherent", head="coherent",
                   description=f"{base.title}, then `coherent` at inference: each label's score becomes the max over "
                               "itself and its descendants.",
                   training=base.training)


def _table(*recipes: RecipeSpec) -> Mapping[str, RecipeSpec]:
    return MappingProxyType({r.name: r for r in recipes})


_BCE = RecipeSpec("bce", "BCE", "Binary cross-entropy on the logits, scores as they come: not coherent.", "sigmoid",
                  _one("BCEWithLogitsLoss()", _bce), "bce")

#: The table: every recipe by name, in the order the documentation lists them.
RECIPES: Mapping[str, RecipeSpec] = _table(
    _BCE,
    _with_coherent(_BCE),
    RecipeSpec("hbce", "HBCE", "BCE plus the trainable hierarchy penalty (HBCELoss's default, the logit hinge at "
               "λ = 0.1): raw scores far more coherent, not coherent by construction.", "sigmoid",
               _one("HBCELoss(h)", _loss("HBCELoss")), "hbce"),
    RecipeSpec("hbce-hinge", "HBCE hinge λ=1", "BCE plus the hinge on probabilities at λ = 1, max(0, p_child − "
               "p_parent): the probability-space counterpart of the default logit hinge.", "sigmoid",
               _one("HBCELoss(h, mode='hinge', scale=1.0)", _loss("HBCELoss", mode="hinge", scale=1.0)),
               "hbce-hinge"),
    RecipeSpec("hbce-hard", "HBCE hard", "The paper's HBCE: BCE plus a hard-indicator penalty whose gradient is "
               "zero, so it trains exactly as BCE (the reported loss can rise).", "sigmoid",
               _one("HBCELoss(h, mode='hard')", _loss("HBCELoss", mode="hard")), "hbce-hard"),
    RecipeSpec("bce+penalty", "BCE + HierarchyPenalty", "BCE plus HierarchyPenalty on the same logits: the "
               "penalty added to a base loss, as any loss of hierloss.losses takes it.", "sigmoid",
               _one("BCEWithLogitsLoss() + HierarchyPenalty(h)", _bce_plus_penalty), "bce+penalty"),
    RecipeSpec("mcloss", "MCLoss", "C-HMCNN: MCLoss trains through the max-constraint, MaxConstraint predicts: "
               "coherent by construction.", "max-constraint", _one("MCLoss(h)", _loss("MCLoss")), "mcloss"),
    RecipeSpec("conditional", "Conditional (chain rule)", "Conditional training: each output learns P(label | its "
               "parents positive); the chain rule's marginals predict, coherent by construction.", "chain-rule",
               _one("ConditionalBCELoss(h)", _loss("ConditionalBCELoss")), "conditional"),
    RecipeSpec("conditional-ft", "Conditional + fine-tuning (chain rule)", "Conditional training, then the last "
               "fifth of the epochs fine-tunes on the chain rule's marginals (Chen et al. 2019): coherent by "
               "construction.", "chain-rule",
               (StageSpec("ConditionalBCELoss(h)", None, _loss("ConditionalBCELoss")),
                StageSpec("ChainRuleBCELoss(h)", 0.2, _loss("ChainRuleBCELoss"))), "conditional-ft"),
    RecipeSpec("asl", "ASL", "Asymmetric loss (Ridnik et al. 2021) for imbalanced labels: not coherent.", "sigmoid",
               _one("AsymmetricLoss()", _loss("AsymmetricLoss", hierarchy=False)), "asl"),
    RecipeSpec("focal", "Focal", "Focal loss (Lin et al. 2017): not coherent.", "sigmoid",
               _one("FocalLoss()", _loss("FocalLoss", hierarchy=False)), "focal"),
    RecipeSpec("zlpr", "ZLPR", "Zero-bounded log-sum-exp and pairwise rank loss (Su et al. 2022): not coherent.",
               "sigmoid", _one("ZLPRLoss()", _loss("ZLPRLoss", hierarchy=False)), "zlpr"),
    RecipeSpec("msml", "Multi-label softmax", "Multi-label softmax loss: not coherent.", "sigmoid",
               _one("MultiLabelSoftmaxLoss()", _loss("MultiLabelSoftmaxLoss", hierarchy=False)), "msml"),
)


def names() -> tuple[str, ...]:
    """The names of the recipes in :data:`RECIPES`, in table order.

    Example:
        >>> names()[:3]
        ('bce', 'bce+coherent', 'hbce')
    """
    return tuple(RECIPES)


def spec(name: str) -> RecipeSpec:
    """The recipe ``name`` as data: a key of :data:`RECIPES`, or ``NAME+coherent`` for a recipe ``NAME`` whose head is
    the sigmoid.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or ``+coherent`` after a recipe that is
            coherent by construction.

    Example:
        >>> spec("hbce+coherent").title, spec("hbce+coherent").head, spec("hbce+coherent").training
        ('HBCE + coherent', 'coherent', 'hbce')
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected a recipe name (str), got {type(name).__name__}")
    if name in RECIPES:
        return RECIPES[name]
    base = name[: -len(COHERENT)] if name.endswith(COHERENT) else ""
    if base in RECIPES:
        found = RECIPES[base]
        if found.head != "sigmoid":
            raise ValueError(f"recipe {base!r} is coherent by construction (head {found.head!r}): {name!r} is not a "
                             "recipe")
        return _with_coherent(found)
    raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)} (or NAME{COHERENT} for a recipe "
                     "whose head is the sigmoid)")


class Recipe:
    """A recipe built for one hierarchy: the training criterion, the prediction head and the stages.

    Build it with :func:`get`. It is not a module itself; it holds two, and :meth:`to` moves both (in place, as
    ``nn.Module.to`` does).

    Attributes:
        spec: the recipe as data (:class:`RecipeSpec`).
        criterion: the training loss, ``criterion(logits, target)`` with ``(N, C)`` logits and targets; for a
            recipe with several stages a :class:`StagedLoss` that :meth:`set_epoch` switches.
        head: the prediction head, ``head(logits)`` → ``(N, C)`` scores in ``[0, 1]`` (the ones you report).
        stages: each stage's criterion (``(criterion,)`` for a one-stage recipe).
    """

    def __init__(self, spec: RecipeSpec, stages: tuple[nn.Module, ...], head: nn.Module) -> None:
        from hierloss.recipes.criteria import StagedLoss

        self.spec = spec
        self.stages = stages
        self.criterion: nn.Module = stages[0] if len(stages) == 1 else StagedLoss(stages)
        self.head = head

    @property
    def name(self) -> str:
        """The recipe's name (``spec.name``)."""
        return self.spec.name

    @property
    def title(self) -> str:
        """The display name (``spec.title``)."""
        return self.spec.title

    @property
    def description(self) -> str:
        """One line on what the recipe is (``spec.description``)."""
        return self.spec.description

    @property
    def coherent_by_construction(self) -> bool:
        """Whether ``head``'s scores never put a child above a parent (``spec.coherent_by_construction``)."""
        return self.spec.coherent_by_construction

    def set_epoch(self, epoch: int, epochs: int) -> int:
        """Switch the criterion to the stage that trains epoch ``epoch`` (0-based) of ``epochs``; call it at the start
        of every epoch. Returns that stage's index (always 0 for a one-stage recipe).

        Raises:
            ValueError: ``epoch`` is not in ``[0, epochs)``.
        """
        index = self.spec.stage_at(epoch, epochs)
        set_stage = getattr(self.criterion, "set_stage", None)
        if len(self.stages) > 1 and set_stage is not None:
            set_stage(index)
        return index

    def to(self, *args: Any, **kwargs: Any) -> Recipe:
        """Move (or cast) the criterion and the head, with ``nn.Module.to``'s arguments; returns ``self``."""
        self.criterion.to(*args, **kwargs)
        self.head.to(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, criterion={self.criterion!r}, head={self.head!r})"


def _head(name: HeadName, hierarchy: Hierarchy) -> nn.Module:
    from torch import nn

    from hierloss.layers import ChainRule, MaxConstraint

    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "chain-rule":
        return ChainRule(hierarchy)
    return nn.Sequential(nn.Sigmoid(), MaxConstraint(hierarchy))  # 'coherent' and 'max-constraint' alike


def get(name: str, hierarchy: Hierarchy, *, validate_args: bool = True) -> Recipe:
    """Build the recipe ``name`` for ``hierarchy``.

    Args:
        name: a key of :data:`RECIPES` (:func:`names`), or ``NAME+coherent`` for a recipe whose head is the sigmoid.
        hierarchy: the label hierarchy; ``C = hierarchy.num_labels``.
        validate_args: passed to hierloss's losses (``False``: no value checks and no host read in ``forward``,
            e.g. for a step captured as a CUDA graph).

    Returns:
        A :class:`Recipe`: ``recipe.criterion(logits, target)`` to train, ``recipe.head(logits)`` to predict,
        ``recipe.set_epoch(epoch, epochs)`` at the start of each epoch (it matters for staged recipes only).

    Raises:
        ValueError: an unknown name, listing the known ones.
        TypeError: ``hierarchy`` is not a :class:`~hierloss.Hierarchy`.

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_dict({"a": ["b"]})
        >>> recipe = get("conditional-ft", h)
        >>> [recipe.set_epoch(epoch, 5) for epoch in range(5)]  # the last fifth fine-tunes
        [0, 0, 0, 0, 1]
        >>> recipe.head(torch.zeros(1, 2))  # the chain rule: P(b) = P(b | a) P(a)
        tensor([[0.5000, 0.2500]])
    """
    from hierloss.hierarchy import Hierarchy

    found = spec(name)
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"Expected a Hierarchy, got {type(hierarchy).__name__}")
    stages = tuple(stage.build(hierarchy, validate_args) for stage in found.stages)
    return Recipe(found, stages, _head(found.head, hierarchy))


def __getattr__(name: str) -> Any:
    if name in ("PenalisedLoss", "StagedLoss"):
        return getattr(importlib.import_module("hierloss.recipes.criteria"), name)
    raise AttributeError(f"module 'hierloss.recipes' has no attribute {name!r}")
