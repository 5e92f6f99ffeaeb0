"""Process-group setup under torchrun, and the few collectives the trainer needs.

`torchrun --nproc-per-node N -m lmforge ...` sets RANK, WORLD_SIZE and LOCAL_RANK for each
process; a plain `python -m lmforge ...` sets none and runs as one process with no process group,
so single-process code pays nothing for distributed support. Never imports a model family.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from lmforge.errors import LmforgeError
from lmforge.kernels.allocator import keep_freed_memory

logger = logging.getLogger(__name__)

DevicePreference = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int
    """Global rank, 0 .. world_size - 1."""
    local_rank: int
    """Rank on this machine; picks the GPU."""
    world_size: int
    """Number of processes in the job."""
    device: torch.device
    """The device this process computes on (`cuda:<local_rank>` or `cpu`)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and talks to the user."""
        return self.rank == 0


def init_distributed(device_preference: DevicePreference = "auto") -> DistributedContext:
    """Read torchrun's environment, pick the device and, for several processes, join the group.

    The backend is NCCL on CUDA and gloo on CPU. Call `cleanup()` when training ends.
    """
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    device = choose_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            # Before init: NCCL binds each process to the current device.
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        if rank == 0:
            logger.info("distributed: %d processes, backend %s", world_size, backend)
    return DistributedContext(
        rank=rank, local_rank=local_rank, world_size=world_size, device=device
    )


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if _is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place, and return it; a no-op in one process."""
    if _is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(value: object) -> object:
    """Rank 0's `value` on every rank (pickled between the job's own processes); `value` itself
    in one process."""
    if not _is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    """Wait for every process; a no-op in one process."""
    if _is_distributed():
        dist.barrier()


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def choose_device(preference: DevicePreference, local_rank: int = 0) -> torch.device:
    """The device for `--run.device` (auto: the GPU of `local_rank` when CUDA is visible, else
    the CPU); the one device choice of pretraining, fine-tuning and evaluation."""
    if preference not in ("auto", "cpu", "cuda"):
        raise LmforgeError(f"unknown device {preference!r}; use one of: auto, cpu, cuda")
    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        raise LmforgeError("--run.device=cuda but no CUDA GPU is visible; use --run.device=cpu")
    if preference == "cpu" or not has_cuda:
        keep_freed_memory("cpu")  # the CPU process's allocator policy (kernels/allocator.py)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise LmforgeError(
            f"LOCAL_RANK {local_rank} needs GPU {local_rank} but only {count} are visible; "
            f"start at most {count} processes per node (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", local_rank)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch of host tensors to `device`. To a GPU from pinned (page-locked) memory and
    `non_blocking`: the DMA copy then runs asynchronously, queued behind the kernels already
    launched, instead of the host waiting for it (a pageable copy is staged and synchronous)."""
    if device.type != "cuda":
        return {key: value.to(device) for key, value in batch.items()}
    return {key: value.pin_memory().to(device, non_blocking=True) for key, value in batch.items()}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as error:
        raise LmforgeError(f"environment variable {name}={value!r} is not an integer") from error
