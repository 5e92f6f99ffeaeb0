"""FSDP in two gloo processes on the CPU: meta-device initialisation gives the unsharded values, and
gradient accumulation synchronises gradients once per optimizer step (DDP and FSDP)."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from lmforge.config.presets import get_preset
from lmforge.config.schema import TrainSection
from lmforge.distributed.checkpointing import _MetadataUnpickler
from lmforge.distributed.fsdp import gradient_sync, is_sharded
from lmforge.distributed.setup import cleanup, init_distributed
from lmforge.errors import LmforgeError
from lmforge.models.lm import build_model
from lmforge.training.precision import Precision
from lmforge.training.sharding import build_sharded_model
from lmforge.training.step import TrainingStep
from tests.distributed.test_setup import _free_port

FAMILIES = ("gpt2-tiny", "t5-tiny", "bert-tiny")
"""A decoder with tied head, an encoder-decoder with T5's init (rows scaled after drawing) and an
untied head, an encoder with a pooler that gets no gradient."""

NUM_MICRO_BATCHES = 3


def _tiny(preset: str):
    return dataclasses.replace(get_preset(preset), d_model=32, num_heads=2, num_layers=2, d_ff=64)


def _join(rank: int, port: int):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    return init_distributed("cpu")


def _worker(rank: int, port: int, results: dict) -> None:
    """All the checks of this file in one job: starting two processes costs more than the checks."""
    context = _join(rank, port)
    _check_meta_init(rank, context, results)
    for kind in ("ddp", "fsdp"):
        _count_syncs(rank, context, results, kind)
    cleanup()


@pytest.fixture(scope="module")
def results() -> dict:
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_worker, args=(_free_port(), shared), nprocs=2, join=True)
        return dict(shared)


def _check_meta_init(rank: int, context, results: dict) -> None:
    for preset in FAMILIES:
        cfg = _tiny(preset)
        torch.manual_seed(7)
        reference = build_model(cfg)
        after_reference = torch.rand(3)
        torch.manual_seed(7)
        sharded = build_sharded_model(cfg, context, TrainSection())
        after_sharded = torch.rand(3)
        local = sum(p.to_local().numel() for p in sharded.parameters())
        gathered = {name: p.full_tensor() for name, p in sharded.named_parameters()}
        expected = dict(reference.named_parameters())
        results[(preset, rank)] = {
            "sharded": is_sharded(sharded),
            "names": list(gathered) == list(expected),
            "equal": all(torch.equal(gathered[n], expected[n]) for n in expected),
            "buffers": all(
                torch.equal(b, dict(reference.named_buffers())[n])
                for n, b in sharded.named_buffers()
            ),
            "generator": torch.equal(after_reference, after_sharded),
            "local_fraction": local / reference.num_parameters(),
        }


@pytest.mark.dist
def test_meta_init_equals_the_unsharded_build(results: dict) -> None:
    for preset in FAMILIES:
        for rank in (0, 1):
            result = results[(preset, rank)]
            assert result["sharded"] and result["names"], (preset, rank)
            assert result["equal"], f"{preset}: sharded init differs from the unsharded one"
            assert result["buffers"] and result["generator"], (preset, rank)
            # Each rank holds about half the model (dim-0 shards of odd sizes round up).
            assert 0.4 < result["local_fraction"] < 0.6, (preset, result["local_fraction"])


def _count_syncs(rank: int, context, results: dict, kind: str) -> None:
    """Counts the gradient collectives of each micro-batch's backward pass in one optimizer step
    of the trainer's step (`TrainingStep`) with the trainer's `gradient_sync` pattern."""
    cfg = _tiny("gpt2-tiny")
    torch.manual_seed(0)
    backward_of = {"index": -1}
    synced_in: list[int] = []
    if kind == "ddp":
        model = DistributedDataParallel(build_model(cfg))

        def counting_hook(state, bucket):
            synced_in.append(backward_of["index"])
            work = dist.all_reduce(bucket.buffer().div_(context.world_size), async_op=True)
            return work.get_future().then(lambda fut: fut.value()[0])

        model.register_comm_hook(None, counting_hook)
    else:
        model = build_sharded_model(cfg, context, TrainSection(fsdp=True))
        original = dist.reduce_scatter_single

        def counting_reduce_scatter(*args, **kwargs):
            synced_in.append(backward_of["index"])
            return original(*args, **kwargs)

        dist.reduce_scatter_single = counting_reduce_scatter  # FSDP2 calls it through `dist`
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = TrainingStep(optimizer=optimizer, parameters=model.parameters(),
                        precision=Precision.from_name("fp32", "cpu"), grad_clip=1.0,
                        schedule=lambda _: 1e-3)  # fmt: skip
    ids = torch.randint(0, cfg.vocab_size, (NUM_MICRO_BATCHES, 2, 8), generator=torch.Generator())

    def micro_loss(index: int, is_last: bool) -> torch.Tensor:
        backward_of["index"] = index  # the backward pass that follows is this micro-batch's
        with gradient_sync(model, enabled=is_last):
            return model(ids[index], labels=ids[index]).loss

    stats = step(0, list(range(NUM_MICRO_BATCHES)), micro_loss)
    if kind == "fsdp":
        dist.reduce_scatter_single = original
    results[(kind, rank)] = {"synced_in": sorted(set(synced_in)), "grad_norm": stats.grad_norm}


@pytest.mark.dist
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_gradients_are_synchronised_once_per_step(kind: str, results: dict) -> None:
    rank0, rank1 = results[(kind, 0)], results[(kind, 1)]
    # Only the last micro-batch's backward pass all-reduces (DDP) or reduce-scatters (FSDP).
    assert rank0["synced_in"] == rank1["synced_in"] == [NUM_MICRO_BATCHES - 1]
    # The clipped norm is the global one: the same number on both ranks.
    assert rank0["grad_norm"] == pytest.approx(rank1["grad_norm"], rel=1e-6)
    assert rank0["grad_norm"] > 0


def test_checkpoint_index_refuses_other_classes() -> None:
    payload = pickle.dumps(os.system)  # what a tampered .metadata could hold
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _MetadataUnpickler(io.BytesIO(payload)).load()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"fsdp_cpu_offload": True}, "needs --train.fsdp=true"),
     ({"fsdp": True, "precision": "fp16"}, "use --train.precision=bf16")],
)  # fmt: skip
def test_fsdp_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(LmforgeError, match=message):
        TrainSection(**options)


def test_consolidate_refuses_bad_input(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge.cli.main import main
    from lmforge.training.checkpoint import save_checkpoint

    run = tmp_path / "run"
    model = build_model(_tiny("gpt2-tiny"))
    save_checkpoint(run, 2, model, None, {}, model_config={}, keep_last=0)
    cases = [
        (["--consolidate", str(run), str(tmp_path / "out")], "drop OUT"),
        (["--consolidate", str(run), "--step", "3"], "step-0000003: the path does not exist"),
        (["--consolidate", str(run)], "is not a sharded checkpoint"),
    ]
    for args, message in cases:
        assert main(["convert", *args]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error, error


def test_muon_with_fsdp_is_refused_in_one_line() -> None:
    from lmforge.config.loading import load_run_config

    with pytest.raises(LmforgeError, match="optim.kind=muon needs whole weight matrices"):
        load_run_config(
            "gpt2-tiny",
            ["--train.fsdp=true", "--optim.kind=muon", "--data.path=d", "--run.dir=r"],
        )
