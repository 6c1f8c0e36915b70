"""The two criteria the recipes compose from hierloss's losses: a loss plus a penalty, and a loss in stages."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["PenalisedLoss", "StagedLoss"]


class PenalisedLoss(nn.Module):
    """A loss plus a penalty on the same logits: ``base(input, target) + penalty(input)``.

    The criterion of the ``'bce+penalty'`` recipe (``BCEWithLogitsLoss()`` plus ``HierarchyPenalty(h)``); any loss
    of :mod:`hierloss.losses` takes any penalty the same way.

    Args:
        base: a criterion called as ``base(input, target)``.
        penalty: a module called as ``penalty(input)``, e.g. :class:`~hierloss.HierarchyPenalty`.

    Shape:
        input and target ``(N, C)``; output what ``base`` and ``penalty`` give (a scalar with their default
        ``reduction='mean'``).

    Example:
        >>> import torch
        >>> from hierloss import Hierarchy, HierarchyPenalty
        >>> h = Hierarchy.from_dict({"a": ["b"]})
        >>> criterion = PenalisedLoss(torch.nn.BCEWithLogitsLoss(), HierarchyPenalty(h))
        >>> logits, target = torch.tensor([[-1.0, 2.0]]), torch.tensor([[1.0, 1.0]])
        >>> bool(criterion(logits, target) > torch.nn.BCEWithLogitsLoss()(logits, target))  # the child is above
        True
    """

    def __init__(self, base: nn.Module, penalty: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.penalty = penalty

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``base(input, target) + penalty(input)``."""
        out: Tensor = self.base(input, target) + self.penalty(input)
        return out


class StagedLoss(nn.Module):
    """A criterion that trains in stages: ``stages[k](input, target)`` while stage ``k`` is on.

    The criterion of a recipe with several stages (``'conditional-ft'``: ``ConditionalBCELoss``, then
    ``ChainRuleBCELoss``); :meth:`hierloss.recipes.Recipe.set_epoch` switches it by the recipe's rule, or call
    :meth:`set_stage` yourself. Stage 0 is on at first.

    Args:
        stages: the criteria, in the order they train; at least one.
        branch_free: compute every stage's loss and weigh them by a 0/1 buffer that :meth:`set_stage` sets in place,
            for a training step captured as a CUDA graph in one stage and replayed in the next (no host
            synchronisation, no Python branch). Otherwise only the current stage's loss is computed.

    Example:
        >>> import torch
        >>> criterion = StagedLoss([torch.nn.BCEWithLogitsLoss(), torch.nn.MSELoss()])
        >>> x, y = torch.zeros(1, 2), torch.ones(1, 2)
        >>> round(criterion(x, y).item(), 4)  # BCE of logit 0 against 1: log 2
        0.6931
        >>> criterion.set_stage(1)
        >>> criterion(x, y).item()  # (0 - 1)²
        1.0
    """

    weight: Tensor

    def __init__(self, stages: Sequence[nn.Module], branch_free: bool = False) -> None:
        super().__init__()
        if len(stages) == 0:
            raise ValueError("`stages` is empty: expected at least one criterion")
        self.stages = nn.ModuleList(stages)
        self.branch_free = branch_free
        self.stage = 0
        self.register_buffer("weight", torch.eye(len(stages))[0], persistent=False)

    def set_stage(self, index: int) -> None:
        """Train with ``stages[index]`` from now on (the 0/1 weights change in place, so a captured graph sees it).

        Raises:
            ValueError: ``index`` is not a stage.
        """
        if not 0 <= index < len(self.stages):
            raise ValueError(f"stage must be in [0, {len(self.stages)}), got {index}")
        self.stage = int(index)
        with torch.no_grad():
            self.weight.zero_()
            self.weight[self.stage] = 1.0

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The current stage's loss of ``input`` against ``target``."""
        if not self.branch_free:
            out: Tensor = self.stages[self.stage](input, target)
            return out
        values = torch.stack([stage(input, target) for stage in self.stages])
        return (values * self.weight.to(values.dtype).view(-1, *([1] * (values.ndim - 1)))).sum(0)

    def extra_repr(self) -> str:
        return f"stage={self.stage}, branch_free={self.branch_free}"
