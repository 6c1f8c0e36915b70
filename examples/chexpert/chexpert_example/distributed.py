"""Data-parallel runs: the process group that ``torchrun`` describes, evaluation shards, indexed datasets.

``torchrun --nproc_per_node N train.py ...`` starts ``N`` processes and sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`init_from_environment` joins them into one process group (NCCL on GPUs, gloo on CPUs).
A plain ``python train.py`` is the one-process case of the same code. Needs torch only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, Sampler

__all__ = ["Indexed", "Processes", "ShardSampler", "all_reduce_sum", "barrier", "broadcast_buffers",
           "init_from_environment", "shutdown"]


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: ``rank`` of ``world_size`` (1 for a one-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether this is one of several processes (a process group is initialised)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and outputs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_environment(device: str = "auto") -> tuple[Processes, torch.device]:
    """Join the process group ``torchrun`` set up (when ``WORLD_SIZE > 1``) and pick this process's device.

    Args:
        device: ``'auto'`` (``cuda:LOCAL_RANK`` when CUDA is available, else the CPU), or a device name; a
            distributed run on CUDA always uses ``cuda:LOCAL_RANK``.

    Returns:
        ``(processes, device)``.
    """
    processes = Processes(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(auto if device == "auto" else device)
    if chosen.type == "cuda" and processes.distributed:
        chosen = torch.device("cuda", processes.local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if processes.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", rank=processes.rank,
                                world_size=processes.world_size)
    return processes, chosen


def shutdown(processes: Processes) -> None:
    """Leave the process group (no-op for a one-process run)."""
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(processes: Processes) -> None:
    """Wait for every process (no-op for a one-process run)."""
    if processes.distributed:
        dist.barrier()


def all_reduce_sum(values: Tensor, processes: Processes) -> Tensor:
    """The element-wise sum of ``values`` over the processes (``values`` itself for a one-process run)."""
    if not processes.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_buffers(module: torch.nn.Module, processes: Processes) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics), so that all evaluate the same model.

    ``DistributedDataParallel`` broadcasts them at the start of each training forward, but the last forward then
    updates each process's own copy.
    """
    if processes.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, …`` of a dataset of ``length`` items, in order, without padding.

    Unlike ``DistributedSampler`` (which repeats items so that every shard has the same length), every item is
    evaluated exactly once: the shards' results together are the dataset's. A shard is empty when
    ``length < world_size``.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"Expected 0 <= rank < world_size, got rank {rank} and world_size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class Indexed(Dataset[tuple[Tensor, Tensor, int]]):
    """A dataset of ``(input, target)`` pairs that also returns each item's index, so that evaluation results
    gathered from several processes can be put back in dataset order."""

    def __init__(self, dataset: Dataset[tuple[Tensor, Tensor]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        image, target = self.dataset[index]
        return image, target, index
