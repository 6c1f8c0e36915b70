"""Timing and memory helpers shared by every benchmark: medians after warm-up, peak memory."""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["cuda_peak_bytes", "median_seconds", "rss_peak_bytes", "sync"]


def sync(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], *, device: str | torch.device = "cpu", warmup: int = 3,
                   repeat: int = 20, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    Each run is bracketed by a device synchronisation. With ``min_time > 0`` each timed sample repeats ``fn``
    until at least ``min_time`` seconds have passed and reports the per-call time (for very fast calls).
    """
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeat):
        calls = 0
        start = time.perf_counter()
        while True:
            fn()
            calls += 1
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / calls)
    return statistics.median(samples)


def rss_peak_bytes() -> int:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    gc.collect()
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cuda_peak_bytes(fn: Callable[[], Any], device: str | torch.device = "cuda") -> int:
    """Peak CUDA memory allocated while running ``fn()`` once (after resetting the counter)."""
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
