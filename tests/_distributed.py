"""Helpers for the tests that run two ``torch.distributed`` gloo processes on the CPU."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A free TCP port on the loopback interface, for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_gloo(rank: int, port: int, timeout_s: float = 20.0) -> None:
    """Join a two-process gloo group on ``port``; a collective waiting longer than ``timeout_s`` raises."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=timeout_s))


def spawn_two(fn: Callable[..., None], *args: Any, limit_s: float = 120.0) -> None:
    """Run ``fn(rank, *args)`` on two processes; fail (instead of hanging CI) if they are not done in ``limit_s``."""
    context = mp.spawn(fn, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + limit_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers still running after {limit_s} s (a rank is blocked in a collective)")
