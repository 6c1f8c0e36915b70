"""Tests for hierloss.metrics.streaming: batch accumulation and DDP synchronisation on two gloo ranks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from hierloss import Hierarchy
from hierloss.metrics import (
    AUROC,
    AveragePrecision,
    HierarchicalF1,
    ViolationRate,
    auroc,
    average_precision,
    edge_violation_rates,
    hierarchical_prf,
    violation_rate,
)
from tests._distributed import free_port, init_gloo, spawn_two

SHARDS = (slice(0, 13), slice(13, 40))  # unequal shards, as the last batch of an epoch makes them


def _hierarchy() -> Hierarchy:
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": []})


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(40, 5, generator=gen), (torch.rand(40, 5, generator=gen) < 0.4).int()


def _metrics(h: Hierarchy) -> dict[str, Any]:
    return {"viol05": ViolationRate(h), "viol_any": ViolationRate(h, threshold=None),
            "hf_micro": HierarchicalF1(h), "hf_macro": HierarchicalF1(h, average="macro"),
            "hf_samples": HierarchicalF1(h, average="samples"), "auroc": AUROC(), "auroc_macro": AUROC("macro"),
            "ap": AveragePrecision(), "ap_macro": AveragePrecision("macro")}


def _update(metrics: dict[str, Any], p: torch.Tensor, y: torch.Tensor) -> None:
    for name, m in metrics.items():
        m.update(p) if name.startswith("viol") else m.update(p, y)


def _results(metrics: dict[str, Any]) -> dict[str, list[float]]:
    out = {name: [m.compute().item()] for name, m in metrics.items()}
    for name in ("hf_micro", "hf_macro", "hf_samples"):
        out[name] = [v.item() for v in metrics[name].compute_all()]
    for name in ("viol05", "viol_any"):
        out[f"{name}_edges"] = metrics[name].edge_rates().tolist()
    return out


def _expected(h: Hierarchy, p: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    def prf(average: str) -> list[float]:
        return [v.item() for v in hierarchical_prf(p, y, h, average)]

    return {"viol05": [violation_rate(p, h).item()], "viol_any": [violation_rate(p, h, None).item()],
            "hf_micro": prf("micro"), "hf_macro": prf("macro"), "hf_samples": prf("samples"),
            "auroc": [auroc(p, y).item()], "auroc_macro": [auroc(p, y, "macro").item()],
            "ap": [average_precision(p, y).item()], "ap_macro": [average_precision(p, y, "macro").item()],
            "viol05_edges": edge_violation_rates(p, h).tolist(),
            "viol_any_edges": edge_violation_rates(p, h, None).tolist()}


def _assert_equal(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_batches_equal_one_shot() -> None:
    """Accumulating three uneven batches equals the functional metrics on the whole set; reset() starts over."""
    h = _hierarchy()
    p, y = _data()
    metrics = _metrics(h)
    for chunk in (slice(0, 7), slice(7, 30), slice(30, 40)):
        _update(metrics, p[chunk], y[chunk])
    _assert_equal(_results(metrics), _expected(h, p, y))
    for m in metrics.values():
        m.reset()
    q, z = _data(1)
    _update(metrics, q, z)
    _assert_equal(_results(metrics), _expected(h, q, z))


def test_empty_metrics() -> None:
    """Before any update the violation rate is 0 and 'samples' hF is zero_division."""
    h = _hierarchy()
    with pytest.warns(UserWarning, match="was called before the ``update`` method"):
        assert ViolationRate(h).compute().item() == 0.0
    assert ViolationRate(h).edge_rates().tolist() == [0.0] * h.num_edges
    with pytest.warns(UserWarning, match="was called before the ``update`` method"):
        assert HierarchicalF1(h, "samples", zero_division=1.0).compute().item() == 1.0


def test_errors() -> None:
    """Bad constructor arguments and mismatched batches are rejected with the offending value."""
    h = _hierarchy()
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\) or None, got 2"):
        ViolationRate(h, threshold=2)
    with pytest.raises(ValueError, match="average must be 'micro', 'macro' or 'samples', got 'weighted'"):
        HierarchicalF1(h, average="weighted")
    with pytest.raises(ValueError, match="average must be 'weighted', 'macro' or None, got 'micro'"):
        AUROC("micro")
    with pytest.raises(ValueError, match="average must be 'micro', 'macro' or None, got 'weighted'"):
        AveragePrecision("weighted")
    with pytest.raises(ValueError, match=r"Expected `preds.shape\[1\]` to be 5 \(hierarchy.num_labels\), got 4"):
        ViolationRate(h).update(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"same shape \(N, C\), got \(3, 5\) and \(3, 4\)"):
        AUROC().update(torch.zeros(3, 5), torch.zeros(3, 4))



def _worker(rank: int, port: int, out_dir: str) -> None:
    init_gloo(rank, port, timeout_s=60)
    try:
        p, y = _data()
        metrics = _metrics(_hierarchy())
        shard = SHARDS[rank]
        half = (shard.start + shard.stop) // 2  # two batches per rank
        _update(metrics, p[shard.start:half], y[shard.start:half])
        _update(metrics, p[half:shard.stop], y[half:shard.stop])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(_results(metrics)))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_equal_single_process(tmp_path: Path) -> None:
    """Two gloo ranks with unequal shards both compute exactly the single-process metrics of the union."""
    spawn_two(_worker, free_port(), str(tmp_path))
    p, y = _data()
    want = _expected(_hierarchy(), p, y)
    local = _metrics(_hierarchy())
    _update(local, p[SHARDS[0]], y[SHARDS[0]])
    assert _results(local)["auroc"] != pytest.approx(want["auroc"])  # a shard alone differs: the sync matters
    for rank in range(2):
        _assert_equal(json.loads((tmp_path / f"rank{rank}.json").read_text()), want)


def test_update_checks_name_the_offender() -> None:
    """Targets are checked before they are stored (a -1 is reported as -1), NaN scores at the batch holding them."""
    h = _hierarchy()
    p, y = _data()
    bad_target = y.clone()
    bad_target[3, 2] = -1
    for metric in (AUROC(), AveragePrecision(), HierarchicalF1(h)):
        with pytest.raises(ValueError, match="`target` column 2 holds -1; metrics expect 0/1 targets"):
            metric.update(p, bad_target)
    nan_preds = p.clone()
    nan_preds[[1, 4, 6], 3] = float("nan")
    for metric in (AUROC(), AveragePrecision(), HierarchicalF1(h)):
        with pytest.raises(ValueError, match=r"`preds` column 3 .*holds 3 NaN value\(s\)"):
            metric.update(nan_preds, y)
    with pytest.raises(ValueError, match=r"`preds` column 3 \('d'\) holds 3 NaN value\(s\)"):
        ViolationRate(h).update(nan_preds)
    metric = AUROC()
    metric.update(p, y)
    with pytest.raises(ValueError, match=r"Expected `preds.shape\[1\]` to be 5 like the earlier batches, got 4"):
        metric.update(p[:, :4], y[:, :4])


def test_hierarchical_f1_argument_rules() -> None:
    """HierarchicalF1 refuses the thresholds and zero_division values hierarchical_prf refuses."""
    h = _hierarchy()
    for threshold in (1.5, -1, float("nan")):
        with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got"):
            HierarchicalF1(h, threshold=threshold)
    with pytest.raises(TypeError, match=r"zero_division must be a number .*got 'warn'"):
        HierarchicalF1(h, zero_division="warn")  # type: ignore[arg-type]


def test_from_logits_and_nothing_seen() -> None:
    """HierarchicalF1(from_logits=True) equals the functional form on logits; ranking metrics of nothing are NaN."""
    h = _hierarchy()
    p, y = _data()
    logits = torch.logit(p)
    metric = HierarchicalF1(h, average="macro", from_logits=True)
    metric.update(logits[:20], y[:20])
    metric.update(logits[20:], y[20:])
    want = hierarchical_prf(logits, y, h, "macro", from_logits=True)
    assert [v.item() for v in metric.compute_all()] == pytest.approx([v.item() for v in want])
    for empty in (AUROC(), AveragePrecision(), AveragePrecision("macro")):
        with pytest.warns(UserWarning, match="was called before the ``update`` method"):
            assert torch.isnan(empty.compute()).item()


def test_unvalidated_streaming_does_not_synchronise() -> None:
    """With validate_args=False update() and compute() of every streaming metric run on data-less 'meta' tensors."""
    h = _hierarchy()
    p, y = torch.rand(16, 5, device="meta"), torch.zeros(16, 5, dtype=torch.long, device="meta")
    with pytest.raises(RuntimeError, match="meta tensors"):  # the checks do read
        AUROC().to("meta").update(p, y)
    metrics: dict[str, Any] = {
        "viol05": ViolationRate(h, validate_args=False), "viol_any": ViolationRate(h, None, validate_args=False),
        "hf": HierarchicalF1(h, validate_args=False), "hf_samples": HierarchicalF1(h, "samples", validate_args=False),
        "auroc": AUROC(validate_args=False), "ap": AveragePrecision(validate_args=False),
    }
    metrics = {name: m.to("meta") for name, m in metrics.items()}
    for _ in range(2):
        _update(metrics, p, y)
    for m in metrics.values():
        assert m.compute().device.type == "meta"


# ---------------------------------------------------------------------------------- ranks without data (DDP)
#: (rank 0 rows, rank 1 rows) of the 40 samples of _data(); an empty range means the rank never calls update().
EMPTY_RANK_SPLITS = {
    "rank1_empty": (slice(0, 40), slice(40, 40)),
    "rank0_empty": (slice(0, 0), slice(0, 40)),
    "uneven": (slice(0, 3), slice(3, 40)),
    "both_empty": (slice(0, 0), slice(0, 0)),
}


def _empty_rank_results(p: torch.Tensor, y: torch.Tensor, batches: list[slice]) -> dict[str, Any]:
    """Every metric after updates with the given row ranges (none: compute() before any update())."""
    metrics = {**_metrics(_hierarchy()), "auroc_none": AUROC(None), "ap_none": AveragePrecision(None)}
    for rows in batches:
        _update(metrics, p[rows], y[rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # compute() before update()
        return {"auroc": metrics["auroc"].compute().tolist(), "ap": metrics["ap"].compute().tolist(),
                "auroc_none": metrics["auroc_none"].compute().tolist(),
                "ap_none": metrics["ap_none"].compute().tolist(), "viol05": metrics["viol05"].compute().tolist(),
                "hf_macro": [v.item() for v in metrics["hf_macro"].compute_all()]}


def _empty_rank_worker(rank: int, port: int, out_dir: str) -> None:
    init_gloo(rank, port, timeout_s=20)
    try:
        p, y = _data()
        results = {}
        for name, split in EMPTY_RANK_SPLITS.items():
            shard = split[rank]  # two batches where this rank has rows, none (no update() call) where it has none
            batches = [slice(shard.start, shard.stop - 1), slice(shard.stop - 1, shard.stop)]
            batches = batches if shard.stop > shard.start else []
            results[name] = _empty_rank_results(p, y, batches)
        manual = AUROC()  # sync() called by hand (as trainers do) gathers the same way as compute()
        if rank == 0:
            manual.update(p, y)
        with manual.sync_context():
            results["manual_sync_rows"] = int(manual.preds.shape[0])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_ranks_without_data_equal_single_process(tmp_path: Path) -> None:
    """A rank that never calls update() (either rank, or both) still gives every rank the single-process result
    of the union, which (where there are rows) equals the functional metrics."""
    spawn_two(_empty_rank_worker, free_port(), str(tmp_path))
    p, y = _data()
    h = _hierarchy()
    got = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for name, (first, second) in EMPTY_RANK_SPLITS.items():
        union = [r for r in (first, second) if r.stop > r.start]
        want = _empty_rank_results(p, y, union)
        if union:
            rows = torch.cat([torch.arange(r.start, r.stop) for r in union])
            q, z = p[rows], y[rows]
            functional = {
                "auroc": auroc(q, z).item(), "ap": average_precision(q, z).item(),
                "auroc_none": auroc(q, z, None).tolist(), "ap_none": average_precision(q, z, None).tolist(),
                "viol05": violation_rate(q, h).item(),
                "hf_macro": [v.item() for v in hierarchical_prf(q, z, h, "macro")]}
            for key, value in functional.items():
                assert want[key] == pytest.approx(value, abs=1e-6), (name, key)
        else:  # nothing seen anywhere: NaN scores, no per-label values, rate 0, zero_division
            assert np.isnan(want["auroc"]) and np.isnan(want["ap"]) and want["auroc_none"] == want["ap_none"] == []
        for rank in range(2):
            assert got[rank]["manual_sync_rows"] == 40
            assert got[rank][name].keys() == want.keys()
            for key, value in want.items():
                assert got[rank][name][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (name, rank, key)
