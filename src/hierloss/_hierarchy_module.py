"""The one base of every module that holds a hierarchy: its edges and derived plans as buffers, the state-dict
guard, the width check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hierloss._validation import check_width
from hierloss.hierarchy import Hierarchy, check_hierarchy
from hierloss.propagation import LevelPlan, PlanKind

__all__ = ["HierarchyModule", "edge_index_mismatch"]


class HierarchyModule(nn.Module):
    """Base of the losses and layers built over a :class:`~hierloss.Hierarchy`.

    * ``edge_index`` (``(2, E)`` long) is a persistent buffer: the hierarchy's identity in a state dict. Loading a
      state dict saved over another hierarchy is refused with an error naming the first differing edge (the
      module's derived buffers and its ``hierarchy`` could not follow it); nothing of the module is loaded then.
    * :meth:`_register_plan` keeps a :class:`~hierloss.propagation.LevelPlan` of the propagation engine in
      non-persistent buffers (derived from the edges), so it follows the module across devices and ``forward``
      never copies it.

    Args:
        hierarchy: the label hierarchy.
        edge_index: the edges to hold, when not ``hierarchy.edge_index`` (e.g. those of its closure).
    """

    edge_index: Tensor

    def __init__(self, hierarchy: Hierarchy, edge_index: Tensor | None = None) -> None:
        super().__init__()
        check_hierarchy(hierarchy)
        self.hierarchy = hierarchy
        self.register_buffer("edge_index", hierarchy.edge_index if edge_index is None else edge_index)
        self._plans: dict[str, tuple[tuple[tuple[int, int], ...], PlanKind]] = {}

    def _register_plan(self, name: str, kind: PlanKind) -> None:
        """Build the ``kind`` plan of the hierarchy and keep it as the buffers ``{name}_nodes`` and
        ``{name}_neighbours``; :meth:`_level_plan` gives it back."""
        plan = LevelPlan.build(self.hierarchy, kind)
        self.register_buffer(f"{name}_nodes", plan.nodes, persistent=False)
        self.register_buffer(f"{name}_neighbours", plan.neighbours, persistent=False)
        self._plans[name] = (plan.groups, kind)

    def _level_plan(self, name: str = "plan") -> LevelPlan:
        groups, kind = self._plans[name]
        return LevelPlan(getattr(self, f"{name}_nodes"), getattr(self, f"{name}_neighbours"), groups,
                         self.hierarchy.num_labels, kind)

    def _check_width(self, input: Tensor, name: str = "input", *, matrix: bool = False) -> None:
        """``input`` must be ``(..., C)`` (``(N, C)`` with ``matrix=True``)."""
        check_width(input, self.hierarchy.num_labels, matrix=matrix, name=name)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        key = prefix + "edge_index"
        if key in state_dict:
            problem = edge_index_mismatch(state_dict[key], self.edge_index, self.hierarchy.labels)
            if problem is not None:
                error_msgs.append(f"{key}: the state dict was saved for another hierarchy ({problem}); build the "
                                  f"{type(self).__name__} from the hierarchy it was saved with")
                return  # nothing of this module is loaded
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f"num_labels={self.hierarchy.num_labels}, num_edges={self.hierarchy.num_edges}"


def edge_index_mismatch(loaded: Any, current: Tensor, labels: Sequence[str]) -> str | None:
    """``None`` when ``loaded`` equals ``current``; else what differs, naming the first differing edge."""
    if not isinstance(loaded, Tensor) or loaded.ndim != 2 or loaded.shape[0] != 2:
        return f"its edge_index is not a (2, E) tensor: {loaded!r:.80}"
    if loaded.shape != current.shape:
        return f"it has {loaded.shape[1]} edges, this hierarchy has {current.shape[1]}"
    loaded, current = loaded.detach().cpu().long(), current.detach().cpu()
    differ = torch.nonzero((loaded != current).any(0))
    if differ.numel() == 0:
        return None
    e = int(differ[0])
    (lp, lc), (cp, cc) = loaded[:, e].tolist(), current[:, e].tolist()
    return (f"its edge {e} joins label indices ({lp}, {lc}); this hierarchy's edge {e} is "
            f"({labels[cp]!r}, {labels[cc]!r}) = ({cp}, {cc})")
