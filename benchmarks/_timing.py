"""Timing and memory helpers shared by every benchmark: medians after warm-up, peak memory."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["cuda_peak_bytes", "machine", "median_seconds", "median_seconds_interleaved", "rss_peak_bytes", "sync"]


def sync(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _per_call_seconds(fn: Callable[[], Any], device: str | torch.device, min_time: float) -> float:
    """Seconds per call of ``fn()``, from batches of 1, 2, 4, ... calls until ``min_time`` has passed.

    The device is synchronised once per batch, not once per call, so on a GPU the sample measures queued
    throughput (as in a training loop) rather than one host round trip per call.
    """
    calls, batch = 0, 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls
        batch *= 2


def median_seconds_interleaved(fns: dict[str, Callable[[], Any]], *, device: str | torch.device = "cpu",
                               warmup: int = 2, repeat: int = 10, min_time: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each ``fns[k]()``, sampled round-robin after ``warmup`` calls of each.

    One sample of each function in turn, medians over the rounds: load from other processes on a shared machine
    falls on all of them alike, so ratios taken from one call stay meaningful. Each sample repeats the call until
    ``min_time`` seconds have passed (for sub-millisecond calls) and ends with a device synchronisation.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            samples[key].append(_per_call_seconds(fn, device, min_time))
    return {k: statistics.median(v) for k, v in samples.items()}


def median_seconds(fn: Callable[[], Any], *, device: str | torch.device = "cpu", warmup: int = 3,
                   repeat: int = 20, min_time: float = 0.0) -> float:
    """Median seconds per call of ``fn()`` over ``repeat`` samples after ``warmup`` calls (see
    :func:`median_seconds_interleaved`)."""
    return median_seconds_interleaved({"fn": fn}, device=device, warmup=warmup, repeat=repeat,
                                      min_time=min_time)["fn"]


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


def machine(device: str, threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
        "python": platform.python_version(), "device": device, "load_average_start": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    # the allocator's settings change CPU times (how often large temporaries page-fault): record any that are set
    allocator = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
    if allocator:
        info["allocator_env"] = allocator
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
