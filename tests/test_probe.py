"""The probe suite: the public API fed bad and extreme inputs, as a demanding user would.

For every call the outcome must be one of two: a ``ValueError`` / ``TypeError`` whose message names the offender
(the label or column, the value, the shape), or the correct result, checked against an independent computation —
never a wrong number, a crash or a hang. Distributed cases (two gloo processes on the CPU, uneven and empty shards)
run under a timeout so that a hang fails instead of blocking.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from hierloss import (
    AsymmetricLoss,
    ChainRuleBCELoss,
    ConditionalBCELoss,
    FocalLoss,
    HBCELoss,
    Hierarchy,
    HierarchyPenalty,
    MCLoss,
    MultiLabelSoftmaxLoss,
    ZLPRLoss,
)
from hierloss.edge_weights import ConditionalWeight
from hierloss.losses import hbce_backend

H = Hierarchy.from_dict({"Abnormal": ["Opacity", "Cardiac"], "Opacity": ["Edema", "Pneumonia"],
                         "Cardiac": ["Cardiomegaly"], "Fracture": []})
C = H.num_labels

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "hbce": lambda **kw: HBCELoss(H, **kw),
    "hbce-hard": lambda **kw: HBCELoss(H, mode="hard", **kw),
    "hbce-soft": lambda **kw: HBCELoss(H, mode="soft", **kw),
    "asl": AsymmetricLoss,
    "focal": FocalLoss,
    "zlpr": ZLPRLoss,
    "msml": MultiLabelSoftmaxLoss,
    "mcloss": lambda **kw: MCLoss(H, **kw),
    "conditional": lambda **kw: ConditionalBCELoss(H, **kw),
    "chain-rule-bce": lambda **kw: ChainRuleBCELoss(H, **kw),
}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Target values a user might feed: valid (0, 1, soft, NaN), CheXpert's -1, and impossible ones.
TARGET_VALUES = st.sampled_from([0.0, 1.0, 0.3, math.nan, -1.0, 2.0, math.inf, -math.inf, 7.0])
VALID_TARGETS = st.sampled_from([0.0, 1.0, 0.3, math.nan])
#: Logits, from ordinary to extreme (finite: the BCE of an infinite logit is NaN in PyTorch too).
LOGITS = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def _matrix(draw: st.DrawFn, n: int, values: st.SearchStrategy[float]) -> Tensor:
    return torch.tensor(draw(st.lists(st.lists(values, min_size=C, max_size=C), min_size=n, max_size=n)),
                        dtype=torch.float32).reshape(n, C)


@st.composite
def batches(draw: st.DrawFn, valid: bool = False) -> tuple[Tensor, Tensor]:
    n = draw(st.integers(1, 5))
    return _matrix(draw, n, LOGITS), _matrix(draw, n, VALID_TARGETS if valid else TARGET_VALUES)


def _offenders(target: Tensor, ignore_index: float | None) -> Tensor:
    """Bool mask of target entries no loss may accept: outside [0, 1], not NaN, not ignore_index."""
    bad = (target < 0) | (target > 1)
    if ignore_index is not None:
        bad &= target != ignore_index
    return bad


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("ignore_index", [None, -1.0])
@SETTINGS
@given(batch=batches())
def test_losses_refuse_impossible_targets_and_compute_valid_ones(name: str, ignore_index: float | None,
                                                                 batch: tuple[Tensor, Tensor]) -> None:
    """Impossible targets (2, ±inf, -1 without ignore_index) raise a ValueError naming the first offending column and
    its value; otherwise the loss is finite and equals the same loss computed without the checks."""
    logits, target = batch
    logits.requires_grad_()
    bad = _offenders(target, ignore_index)
    module = LOSSES[name](ignore_index=ignore_index)
    if bool(bad.any()):
        rows, cols = torch.nonzero(bad, as_tuple=True)
        col, value = int(cols[0]), float(target[rows[0], cols[0]])
        with pytest.raises(ValueError, match=rf"column {col}\b.* holds {re.escape(repr(value))} "
                                             rf"\({int(bad.sum())} such value"):
            module(logits, target)
        return
    loss = module(logits, target)
    assert torch.isfinite(loss), (name, logits, target)
    torch.testing.assert_close(loss, LOSSES[name](ignore_index=ignore_index, validate_args=False)(logits, target))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("mode", ["logit_hinge", "hinge", "squared_hinge", "soft", "hard"])
@SETTINGS
@given(batch=batches(valid=True))
def test_hbce_kernels_agree_on_any_valid_batch(mode: str, batch: tuple[Tensor, Tensor]) -> None:
    """On any valid batch (extreme logits, NaN and soft targets) the fused kernels equal the plain-PyTorch reference,
    value and gradient."""
    logits, target = batch
    crit = HBCELoss(H, mode=mode, reduction="none")
    results = []
    for backend in ("reference", "fused", "fused_cpu"):
        x = logits.clone().requires_grad_()
        with hbce_backend(backend):
            out = crit(x, target)
            (grad,) = torch.autograd.grad(out.sum(), x)
        results.append((out.detach(), grad))
    for out, grad in results[1:]:
        torch.testing.assert_close(out, results[0][0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_refuse_bad_shapes_naming_them(name: str) -> None:
    """Wrong ranks and mismatched shapes raise a ValueError quoting the shape received."""
    module = LOSSES[name]()
    for logits, target in ((torch.randn(C), torch.zeros(C)), (torch.randn(2, C, 1), torch.zeros(2, C, 1)),
                           (torch.randn(3, C), torch.zeros(3, C + 1))):
        with pytest.raises(ValueError, match=re.escape(str(tuple(target.shape if logits.ndim == 2 else
                                                                  logits.shape)))):
            module(logits, target)


def test_probabilities_and_penalty_inputs_are_checked() -> None:
    """Raw logits passed as probabilities are refused naming the label; NaN probabilities too."""
    probs = torch.rand(4, C)
    probs[2, 5] = 3.5
    with pytest.raises(ValueError, match=r"column 5 \('Cardiomegaly'\) holds 3\.5"):
        HBCELoss(H, mode="hard", from_logits=False)(probs, torch.zeros(4, C))
    with pytest.raises(ValueError, match=r"column 5 \('Cardiomegaly'\) holds 3\.5"):
        HierarchyPenalty(H, from_logits=False)(probs)
    probs[2, 5] = math.nan
    with pytest.raises(ValueError, match=r"column 5 \('Cardiomegaly'\) holds nan"):
        HierarchyPenalty(H, from_logits=False)(probs)


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_constructor_arguments_are_refused(value: float) -> None:
    """Negative, NaN and infinite hyper-parameters are refused when the module is built, naming the argument."""
    for cls in (HBCELoss, ConditionalBCELoss, ChainRuleBCELoss):
        with pytest.raises(ValueError, match="pos_weight"):
            cls(H, pos_weight=torch.tensor([1.0] * (C - 1) + [value]))
    with pytest.raises(ValueError, match="scale"):
        HBCELoss(H, scale=value)
    with pytest.raises(ValueError, match="temperature"):
        HBCELoss(H, mode="soft", temperature=value)
    with pytest.raises(ValueError, match="weight of edge"):
        HBCELoss(H, edge_weight=[1.0] * (H.num_edges - 1) + [value])
    with pytest.raises(ValueError, match="gamma_neg"):
        AsymmetricLoss(gamma_neg=value)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=value)
    with pytest.raises(ValueError, match="temperature"):
        ZLPRLoss(temperature=value)


# ---------------------------------------------------------------- the hierarchy
NAMES = [f"L{i}" for i in range(8)]


@SETTINGS
@given(edges=st.lists(st.tuples(st.sampled_from([*NAMES, "ghost"]), st.sampled_from(NAMES)), max_size=14))
def test_hierarchy_from_any_edge_list(edges: list[tuple[str, str]]) -> None:
    """Any edge list either builds a hierarchy whose ancestors equal networkx's, or raises a ValueError naming the
    unknown label, the self-loop, the duplicate edge or the cycle."""
    try:
        h = Hierarchy(NAMES, edges)
    except ValueError as error:  # the message must name a problem that is really there
        message = str(error)
        graph = nx.DiGraph(edges)
        if "'ghost'" in message:
            assert any(p == "ghost" for p, _ in edges)
        elif "self-loop" in message:
            assert any(f"({p!r}, {c!r})" in message for p, c in edges if p == c)
        elif "duplicate" in message.lower():
            assert any(f"({p!r}, {c!r})" in message for p, c in set(edges) if edges.count((p, c)) > 1)
        else:
            assert "cycle" in message.lower() and not nx.is_directed_acyclic_graph(graph), message
            named = set(re.findall(r"'(L\d)'", message))
            assert named and any(named <= set(cycle) for cycle in nx.simple_cycles(graph))
        return
    graph = nx.DiGraph()
    graph.add_nodes_from(NAMES)
    graph.add_edges_from(edges)
    for label in NAMES:
        assert set(h.ancestors(label)) == nx.ancestors(graph, label)
        assert set(h.descendants(label)) == nx.descendants(graph, label)


# ---------------------------------------------------------------- edge weights
@SETTINGS
@given(seed=st.integers(0, 10_000), order=st.permutations(range(C)))
def test_edge_weights_take_columns_in_any_order(seed: int, order: list[int]) -> None:
    """A DataFrame with the hierarchy's columns in any order (and an extra column) gives the weights of the
    canonical order; the same values as a NumPy matrix."""
    rng = np.random.default_rng(seed)
    y = H.propagate((rng.random((40, C)) < 0.3).astype(np.float64))
    want = ConditionalWeight().fit(H, y).values
    frame = pd.DataFrame(y, columns=list(H.labels))
    shuffled = frame[[H.labels[i] for i in order]].assign(Path="x")
    np.testing.assert_allclose(ConditionalWeight().fit(H, shuffled).values, want)
    reversed_block = pd.DataFrame(np.ascontiguousarray(y[:, ::-1]), columns=list(reversed(H.labels)))
    np.testing.assert_allclose(ConditionalWeight().fit(H, reversed_block).values, want)


def test_edge_weights_name_missing_columns_and_bad_values() -> None:
    """A missing label column and an impossible value are named."""
    frame = pd.DataFrame(np.zeros((5, C)), columns=list(H.labels))
    with pytest.raises(ValueError, match="Edema"):
        ConditionalWeight().fit(H, frame.drop(columns=["Edema"]))
    frame.loc[2, "Cardiac"] = 3.0
    with pytest.raises(ValueError, match=r"Cardiac.*3\.0|3\.0.*Cardiac"):
        ConditionalWeight().fit(H, frame)


# ---------------------------------------------------------------- degenerate cases equal PyTorch
def test_degenerate_cases_equal_pytorch() -> None:
    """With λ = 0 HBCE is PyTorch's BCE, and focal loss with γ = 0 and no α is too, on extreme logits."""
    torch.manual_seed(0)
    x = torch.randn(16, C) * 50
    y = (torch.rand(16, C) < 0.4).float()
    want = F.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(HBCELoss(H, scale=0.0)(x, y), want)
    torch.testing.assert_close(FocalLoss(alpha=None, gamma=0.0)(x, y), want)


# ---------------------------------------------------------------- distributed: uneven and empty shards
#: Rows of the 40 probe samples held by (rank 0, rank 1); 0 rows means the rank never calls update().
DDP_SPLITS = [(40, 0), (0, 40), (3, 37), (17, 23), (0, 0)]


def _ddp_data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(11)
    y = H.propagate((torch.rand(40, C, generator=g) < 0.4).float())
    return torch.rand(40, C, generator=g), y


def _ddp_results(rows: list[slice], process_group: object = None) -> dict[str, object]:
    """Streaming metrics and edge weights after batches of 7 rows from ``rows`` (``compute()`` on every rank)."""
    import warnings

    from hierloss.metrics import AUROC, AveragePrecision, HierarchicalF1, ViolationRate

    p, y = _ddp_data()
    metrics = {"auroc": AUROC(), "ap": AveragePrecision(), "viol": ViolationRate(H), "hf1": HierarchicalF1(H)}
    for part in rows:
        for start in range(part.start, part.stop, 7):
            batch = slice(start, min(start + 7, part.stop))
            for name, metric in metrics.items():
                if name == "viol":
                    metric.update(p[batch])
                else:
                    metric.update(p[batch], y[batch])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # compute() before any update()
        out: dict[str, object] = {name: float(m.compute()) for name, m in metrics.items() if name != "hf1"}
        out["hf1"] = [float(v) for v in metrics["hf1"].compute_all()]
    labels = torch.cat([y[part] for part in rows]) if rows else torch.zeros(0, C)
    try:
        out["edge_weights"] = ConditionalWeight().fit(H, labels.numpy(), process_group=process_group).values.tolist()
    except ValueError as error:
        out["edge_weights"] = str(error)
    return out


def _ddp_probe_worker(rank: int, port: int, out_dir: str) -> None:
    import json
    from pathlib import Path

    import torch.distributed as dist

    from tests._distributed import init_gloo

    init_gloo(rank, port)
    try:
        results = []
        for first, second in DDP_SPLITS:
            mine = slice(0, first) if rank == 0 else slice(first, first + second)
            results.append(_ddp_results([mine] if mine.stop > mine.start else [], dist.group.WORLD))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_ddp_uneven_and_empty_shards_equal_one_process(tmp_path: object) -> None:
    """Two gloo ranks, shards uneven or empty (one rank or both): every streaming metric and the fitted edge weights
    on every rank equal one process on the union (NaN / the same error when there is no data at all), within the
    time limit — no abort, no hang."""
    import json
    from pathlib import Path

    from tests._distributed import free_port, spawn_two

    spawn_two(_ddp_probe_worker, free_port(), str(tmp_path))
    for rank in range(2):
        got = json.loads(Path(str(tmp_path), f"rank{rank}.json").read_text())
        for (first, second), result in zip(DDP_SPLITS, got):
            union = [slice(0, first + second)] if first + second else []
            want = _ddp_results(union)
            for key, value in want.items():
                if isinstance(value, str):  # no data on any rank: an "empty" error on every rank, as in one process
                    assert "empty" in value and "empty" in result[key], (result[key], value)
                else:
                    assert result[key] == pytest.approx(value, abs=1e-9, nan_ok=True), (first, second, rank, key)
