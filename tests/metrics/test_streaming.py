"""Tests for hierloss.metrics.streaming: batch accumulation and DDP synchronisation on two gloo ranks."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
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
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    p, y = _data()
    want = _expected(_hierarchy(), p, y)
    local = _metrics(_hierarchy())
    _update(local, p[SHARDS[0]], y[SHARDS[0]])
    assert _results(local)["auroc"] != pytest.approx(want["auroc"])  # a shard alone differs: the sync matters
    for rank in range(2):
        _assert_equal(json.loads((tmp_path / f"rank{rank}.json").read_text()), want)
