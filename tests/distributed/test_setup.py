"""init_distributed in one process, and a real two-process gloo job on CPU."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from lmforge.distributed.setup import all_reduce_sum, barrier, cleanup, init_distributed
from lmforge.errors import LmforgeError

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_torchrun_env")
def test_single_process_needs_no_process_group() -> None:
    context = init_distributed("cpu")
    assert (context.rank, context.local_rank, context.world_size) == (0, 0, 1)
    assert context.is_main and context.device == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    tensor = torch.tensor([2.0])
    assert all_reduce_sum(tensor) is tensor and tensor.item() == 2.0
    barrier()
    cleanup()


@pytest.mark.usefixtures("no_torchrun_env")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(LmforgeError, match="--run.device=cpu"):
        init_distributed("cuda")


def _worker(rank: int, world_size: int, port: int, results: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    context = init_distributed("cpu")
    total = all_reduce_sum(torch.tensor([float(rank + 1)]))
    barrier()
    results[rank] = (context.is_main, total.item())
    cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.dist
def test_two_gloo_processes_sum_their_tensors() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        assert dict(results) == {0: (True, 3.0), 1: (False, 3.0)}
