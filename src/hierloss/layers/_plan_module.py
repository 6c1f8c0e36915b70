"""The base of the modules that apply a hierarchy's propagation plan: the plan lives in their buffers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hierloss.hierarchy import Hierarchy
from hierloss.propagation import PropagationPlan

__all__ = ["PlanModule"]


class PlanModule(nn.Module):
    """Holds a hierarchy's :class:`~hierloss.propagation.PropagationPlan` as buffers, so that it follows the module
    across devices and ``forward`` never copies it.

    ``direction='up'`` is the plan of the max over descendants (edges grouped by the parent's height), ``'down'``
    the plan of the passes from the roots to the leaves (edges grouped by the child's depth). Loading a state dict
    whose plan differs (saved over another hierarchy) is refused: the plan must stay the one of ``self.hierarchy``.
    """

    plan_source: Tensor
    plan_target: Tensor

    def __init__(self, hierarchy: Hierarchy, direction: Literal["up", "down"] = "up") -> None:
        super().__init__()
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"Expected a Hierarchy, got {type(hierarchy).__name__}")
        plan = PropagationPlan.upward(hierarchy) if direction == "up" else PropagationPlan.downward(hierarchy)
        self.hierarchy = hierarchy
        self.register_buffer("plan_source", plan.source)
        self.register_buffer("plan_target", plan.target)
        self.plan_sizes = plan.sizes
        self.plan_reduce = plan.reduce

    def _plan(self) -> PropagationPlan:
        return PropagationPlan(self.plan_source, self.plan_target, self.plan_sizes, self.plan_reduce)
    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        for name in ("plan_source", "plan_target"):
            loaded = state_dict.get(prefix + name)
            own = getattr(self, name)
            if isinstance(loaded, Tensor) and (loaded.shape != own.shape or not torch.equal(loaded.cpu(), own.cpu())):
                error_msgs.append(f"{prefix}{name}: the state dict was saved for another hierarchy (its propagation "
                                  f"plan differs); build the {type(self).__name__} from the hierarchy it was saved "
                                  "with")
                return  # nothing of this module is loaded
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_width(self, input: Tensor, name: str = "input") -> None:
        if input.ndim == 0 or input.shape[-1] != self.hierarchy.num_labels:
            raise ValueError(f"Expected `{name}` of shape (..., {self.hierarchy.num_labels}), got {tuple(input.shape)}")

    def extra_repr(self) -> str:
        return f"num_labels={self.hierarchy.num_labels}, num_edges={self.hierarchy.num_edges}"


