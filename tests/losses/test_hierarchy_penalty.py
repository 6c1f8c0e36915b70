"""Tests for hierloss.losses.hierarchy_penalty: the penalty term alone, against a naive per-edge loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hierloss import Hierarchy, HierarchyPenalty
from hierloss.functional import hierarchy_penalty


@pytest.fixture
def dag() -> Hierarchy:
    """A small DAG with a multi-parent node."""
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"]})


def _naive(probs: torch.Tensor, h: Hierarchy, weights: list[float], mode: str) -> torch.Tensor:
    out = []
    for row in probs:
        total = 0.0
        for (p, c), w in zip(h.edge_indices, weights):
            pp, pc = float(row[p]), float(row[c])
            if mode == "hard":
                term = float(pp < 0.5 < pc)
            elif mode == "soft":
                a, b = torch.tensor((0.5 - pp) / 0.1), torch.tensor((pc - 0.5) / 0.1)
                term = float(torch.sigmoid(a) * torch.sigmoid(b))
            elif mode == "hinge":
                term = max(0.0, pc - pp)
            else:
                term = max(0.0, pc - pp) ** 2
            total += w * term
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["soft", "hard", "hinge", "squared_hinge"])
def test_matches_naive_loop(dag: Hierarchy, mode: str) -> None:
    """Summed and averaged penalties equal a per-sample, per-edge loop; logits and probabilities agree."""
    torch.manual_seed(0)
    probs = torch.rand(12, dag.num_labels, dtype=torch.float64)
    weights = [0.5, 1.0, 2.0, 3.0]
    want = _naive(probs, dag, weights, mode) * 0.7
    for edge_reduction, div in (("sum", 1), ("mean", dag.num_edges)):
        pen = HierarchyPenalty(dag, edge_weight=weights, scale=0.7, mode=mode, from_logits=False, reduction="none",
                               edge_reduction=edge_reduction)
        torch.testing.assert_close(pen(probs), want / div)
        logit_pen = HierarchyPenalty(dag, edge_weight=weights, scale=0.7, mode=mode, reduction="none",
                                     edge_reduction=edge_reduction)
        torch.testing.assert_close(logit_pen(torch.logit(probs)), want / div)


def test_reductions_and_function(dag: Hierarchy) -> None:
    """'mean', 'sum' and 'none' relate as they should, and the module equals the function."""
    x = torch.randn(10, dag.num_labels)
    per = HierarchyPenalty(dag, reduction="none")(x)
    torch.testing.assert_close(HierarchyPenalty(dag)(x), per.mean())
    torch.testing.assert_close(HierarchyPenalty(dag, reduction="sum")(x), per.sum())
    torch.testing.assert_close(hierarchy_penalty(x, dag, reduction="none"), per)


def test_composes_with_any_base_loss(dag: Hierarchy) -> None:
    """BCE + HierarchyPenalty with the same settings equals HBCELoss."""
    from hierloss import HBCELoss

    x, y = torch.randn(6, dag.num_labels), (torch.rand(6, dag.num_labels) < 0.5).float()
    total = F.binary_cross_entropy_with_logits(x, y) + HierarchyPenalty(dag, scale=2.0, mode="soft")(x)
    torch.testing.assert_close(total, HBCELoss(dag, scale=2.0, mode="soft")(x, y))


def test_buffers_move_and_compile(dag: Hierarchy) -> None:
    """Constants are buffers (state_dict, dtype moves) and the module compiles without graph breaks."""
    pen = HierarchyPenalty(dag, edge_weight=[1.0, 2.0, 3.0, 4.0])
    assert set(pen.state_dict()) == {"edge_index", "edge_weight"}
    assert pen.double().edge_weight.dtype == torch.float64 and pen.edge_index.dtype == torch.long
    x = torch.randn(4, dag.num_labels, requires_grad=True)
    compiled = torch.compile(pen, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), pen(x))


def test_pickle_and_state_dict_round_trip(dag: Hierarchy) -> None:
    """A pickled module and one loaded from a state_dict give the same penalty."""
    import io
    import pickle

    pen = HierarchyPenalty(dag, edge_weight=[1.0, 2.0, 3.0, 4.0], scale=0.5, mode="squared_hinge")
    x = torch.randn(5, dag.num_labels)
    torch.testing.assert_close(pickle.loads(pickle.dumps(pen))(x), pen(x))
    buf = io.BytesIO()
    torch.save(pen.state_dict(), buf)
    buf.seek(0)
    fresh = HierarchyPenalty(dag, scale=0.5, mode="squared_hinge")
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(x), pen(x))


def test_no_edges_is_zero() -> None:
    """A hierarchy without edges gives a zero penalty (and a zero gradient) for every reduction."""
    flat = Hierarchy(["a", "b"])
    x = torch.randn(3, 2, requires_grad=True)
    for reduction in ("mean", "sum"):
        out = HierarchyPenalty(flat, reduction=reduction)(x)
        (grad,) = torch.autograd.grad(out, x)
        assert out.item() == 0.0 and (grad == 0).all()
    assert HierarchyPenalty(flat, reduction="none")(x).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_float32(dag: Hierarchy, dtype: torch.dtype) -> None:
    """Under CPU autocast the penalty is float32 and equals the float32 penalty of the same logits."""
    lin = torch.nn.Linear(3, dag.num_labels)
    pen = HierarchyPenalty(dag)
    with torch.autocast("cpu", dtype=dtype):
        logits = lin(torch.randn(6, 3))
        out = pen(logits)
    assert logits.dtype == dtype and out.dtype == torch.float32
    torch.testing.assert_close(out, pen(logits.float()))


def test_errors(dag: Hierarchy) -> None:
    """Shape and argument errors name the offending value."""
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 4\), got \(3, 5\)"):
        HierarchyPenalty(dag)(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'max'"):
        HierarchyPenalty(dag, reduction="max")
    with pytest.raises(ValueError, match=r"Expected 4 edge weights \(one per edge of hierarchy.edges\), got shape "
                                         r"\(2,\)"):
        hierarchy_penalty(torch.zeros(2, 4), dag, torch.ones(2))
    with pytest.raises(ValueError, match=r"Expected `input` of shape \(N, 4\), got \(2, 3\)"):
        hierarchy_penalty(torch.zeros(2, 3), dag)
    with pytest.raises(TypeError, match=r"Expected a Hierarchy, got dict"):
        HierarchyPenalty({"a": ["b"]})  # type: ignore[arg-type]


def test_state_dict_of_another_hierarchy_is_refused() -> None:
    """A state dict saved over another hierarchy (as many edges) is refused with the differing edge named."""
    h = Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"]})
    other = Hierarchy.from_dict({"a": ["b", "c"], "c": ["d"]})
    pen = HierarchyPenalty(h)
    with pytest.raises(RuntimeError, match=r"edge_index: the state dict was saved for another hierarchy \(its edge 2 "
                                           r"joins label indices \(2, 3\); this hierarchy's edge 2 is \('b', 'd'\)"):
        pen.load_state_dict(HierarchyPenalty(other).state_dict())
    assert torch.equal(pen.edge_index, h.edge_index)
