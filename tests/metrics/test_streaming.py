"""Tests for hierloss.metrics.streaming: batch accumulation and DDP synchronisation on two gloo ranks."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
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
    hierarchical_prf,
    violation_rate,
)


def _hierarchy() -> Hierarchy:
    return Hierarchy.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": []})


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(40, 5, generator=gen), (torch.rand(40, 5, generator=gen) < 0.4).int()


def _metrics(h: Hierarchy) -> dict[str, object]:
    return {"viol05": ViolationRate(h), "viol_any": ViolationRate(h, threshold=None),
            "hf_micro": HierarchicalF1(h), "hf_macro": HierarchicalF1(h, average="macro"),
            "auroc": AUROC(), "ap": AveragePrecision()}


def _expected(h: Hierarchy, p: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"viol05": violation_rate(p, h).item(), "viol_any": violation_rate(p, h, None).item(),
            "hf_micro": hierarchical_prf(p, y, h)[2].item(), "hf_macro": hierarchical_prf(p, y, h, "macro")[2].item(),
            "auroc": auroc(p, y).item(), "ap": average_precision(p, y).item()}


def test_batches_equal_one_shot() -> None:
    """Accumulating three uneven batches equals the functional metric on the whole set."""
    h = _hierarchy()
    p, y = _data()
    metrics = _metrics(h)
    for chunk in (slice(0, 7), slice(7, 30), slice(30, 40)):
        for name, m in metrics.items():
            m.update(p[chunk]) if name.startswith("viol") else m.update(p[chunk], y[chunk])  # type: ignore[attr-defined]
    want = _expected(h, p, y)
    for name, m in metrics.items():
        assert m.compute().item() == pytest.approx(want[name], abs=1e-6), name  # type: ignore[attr-defined]
    hp, hr, hf = metrics["hf_micro"].compute_all()  # type: ignore[attr-defined]
    assert [hp.item(), hr.item(), hf.item()] == pytest.approx([v.item() for v in hierarchical_prf(p, y, h)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        h = _hierarchy()
        p, y = _data()
        shard = slice(0, 13) if rank == 0 else slice(13, 40)
        metrics = _metrics(h)
        for name, m in metrics.items():
            m.update(p[shard]) if name.startswith("viol") else m.update(p[shard], y[shard])  # type: ignore[attr-defined]
        values = {name: m.compute().item() for name, m in metrics.items()}  # type: ignore[attr-defined]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(values))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_equal_single_process(tmp_path: Path) -> None:
    """Two gloo ranks with unequal shards compute exactly the single-process metrics of the union."""
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    p, y = _data()
    want = _expected(_hierarchy(), p, y)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, value in want.items():
            assert got[name] == pytest.approx(value, abs=1e-6), (rank, name)
    assert not np.isnan(list(want.values())).any()
