"""init_distributed in one process, a real two-process gloo job on CPU, the device choice and
batch copies."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lmforge.cli.main import main
from lmforge.distributed.setup import (
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
    to_device,
)
from lmforge.errors import LmforgeError
from tests.conftest import TINY_MODEL

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


@pytest.mark.usefixtures("no_torchrun_env")
def test_pretrain_on_cuda_without_a_gpu_is_one_line(
    python_docs_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    argv = ["pretrain", "gpt2-tiny", f"--data.path={python_docs_data}", f"--run.dir={tmp_path}",
            *TINY_MODEL, "--train.max_steps=1", "--run.device=cuda"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --run.device=cuda but no CUDA GPU is visible; use --run.device=cpu"]


def test_batches_for_the_cpu_are_not_copied() -> None:
    batch = {"input_ids": torch.arange(6).view(2, 3), "labels": torch.ones(2, 3)}
    moved = to_device(batch, torch.device("cpu"))
    assert moved.keys() == batch.keys()
    assert all(moved[key] is batch[key] for key in batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_for_a_gpu_are_copied_from_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = []
    pin_memory = torch.Tensor.pin_memory

    def recording(tensor: torch.Tensor, *args) -> torch.Tensor:  # noqa: ANN002
        pinned.append(tensor.shape)
        return pin_memory(tensor, *args)

    monkeypatch.setattr(torch.Tensor, "pin_memory", recording)
    moved = to_device({"input_ids": torch.arange(6).view(2, 3)}, torch.device("cuda"))
    assert pinned == [(2, 3)] and moved["input_ids"].is_cuda
    assert torch.equal(moved["input_ids"].cpu(), torch.arange(6).view(2, 3))


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
