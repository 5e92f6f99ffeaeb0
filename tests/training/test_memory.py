"""training/memory.py: the memory estimate printed before training, against what a tiny model
really holds on the CPU (parameters and optimizer state exactly; activations within a factor of 2
of the bytes autograd saves), and the one-line refusal when it cannot fit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.model import with_dropout
from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.models.lm import build_model
from lmforge.training.memory import (
    GIB,
    MemoryEstimate,
    available_memory,
    check_fits,
    estimate_memory,
)
from lmforge.training.optim import build_optimizer

B, T = 4, 128


def tiny(preset: str):  # noqa: ANN201
    return with_dropout(dataclasses.replace(get_preset(preset), vocab_size=512), 0.1)


def estimate(model, cfg, dtype=torch.float32, **kwargs) -> MemoryEstimate:  # noqa: ANN001
    options = dict(micro_batch_size=B, seq_len=T, compute_dtype=dtype, device="cpu")
    return estimate_memory(model, cfg, **{**options, "activation_checkpointing": False, **kwargs})


def batch(cfg) -> dict[str, torch.Tensor]:  # noqa: ANN001
    ids = torch.randint(5, cfg.vocab_size, (B, T))
    inputs = {"input_ids": ids, "labels": ids}
    if cfg.family == "encoder_decoder":
        inputs["decoder_input_ids"] = ids
    return inputs


def test_parameters_gradients_and_adamw_state_are_exact() -> None:
    cfg = tiny("gpt2-tiny")
    model = build_model(cfg).train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    model(**batch(cfg)).loss.backward()
    optimizer.step()
    state = sum(
        value.numel() * value.element_size()
        for per_param in optimizer.state.values()
        for value in per_param.values()
    )
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    result = estimate(model, cfg)
    assert (result.parameters, result.gradients, result.optimizer) == (weights, grads, state)


def test_a_shard_factor_divides_the_weight_parts_only() -> None:
    cfg = tiny("gpt2-tiny")
    model = build_model(cfg, device="meta")
    whole, sharded = estimate(model, cfg), estimate(model, cfg, shard_factor=4)
    assert sharded.parameters == -(-whole.parameters // 4)
    assert sharded.optimizer == -(-whole.optimizer // 4)
    assert sharded.activations == whole.activations
    assert "sharded 4 ways" in sharded.describe()


def saved_activation_bytes(model, inputs, dtype: torch.dtype) -> int:  # noqa: ANN001
    """Bytes of the distinct non-parameter storages autograd saves in one training forward."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs).loss
        loss.backward()
    return sum(storages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("preset", ["gpt2-tiny", "bert-tiny", "t5-tiny", "bart-tiny"])
def test_activations_are_within_a_factor_of_two_of_what_autograd_keeps(
    preset: str, dtype: torch.dtype
) -> None:
    cfg = tiny(preset)
    model = build_model(cfg).train()
    measured = saved_activation_bytes(model, batch(cfg), dtype)
    result = estimate(model, cfg, dtype)
    # The autocast weight copies are counted with the activations; the hooks skip parameters
    # but see those copies only where a matmul saves them, so compare without them.
    copies = 0 if dtype == torch.float32 else sum(p.numel() for p in model.parameters()) * 2
    assert 0.5 < (result.activations - copies) / measured < 2.0


def test_checkpointing_shrinks_the_activation_estimate() -> None:
    cfg = dataclasses.replace(tiny("gpt2-tiny"), num_layers=12)
    model = build_model(cfg, device="meta")
    plain = estimate(model, cfg)
    checkpointed = estimate(model, cfg, activation_checkpointing=True)
    assert checkpointed.activations < plain.activations / 3
    assert checkpointed.activations_other == plain.activations
    assert "without activation checkpointing" in checkpointed.describe()


def test_a_run_that_cannot_fit_is_refused_in_one_line() -> None:
    cfg = tiny("gpt2-tiny")
    result = estimate(build_model(cfg, device="meta"), cfg)
    check_fits(result, free=10 * result.total, device="cpu")
    check_fits(result, free=None, device="cpu")  # unknown: no refusal
    with pytest.raises(LmforgeError) as error:
        check_fits(result, free=result.total // 2, device="cuda:0")
    message = str(error.value)
    assert "\n" not in message and "cuda:0 has" in message
    for lever in ("--train.micro_batch_size", "--train.activation_checkpointing=true",
                  "--train.skip_memory_check=true"):  # fmt: skip
        assert lever in message


def test_free_memory_of_the_cpu_is_known_and_plausible() -> None:
    free = available_memory("cpu")
    assert free is not None and 0 < free < 1 << 50
    assert available_memory("meta") is None
    assert GIB == 1 << 30


def pretrain_argv(data, run_dir, *extra: str) -> list[str]:  # noqa: ANN001
    from tests.conftest import TINY_MODEL

    return ["pretrain", "gpt2-tiny", f"--data.path={data}", f"--run.dir={run_dir}", *TINY_MODEL,
            "--train.max_steps=2", "--train.batch_size=2", "--eval.every=0", *extra]  # fmt: skip


def test_pretraining_logs_the_estimate_and_trains_with_checkpointing(
    python_docs_data,
    tmp_path,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    from lmforge.cli.main import main

    argv = pretrain_argv(
        python_docs_data, tmp_path / "run", "--train.activation_checkpointing=true"
    )
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert "memory estimate per rank: parameters" in caplog.text
    assert "(without activation checkpointing:" in caplog.text


def test_pretraining_that_cannot_fit_stops_with_one_line_unless_told(
    python_docs_data,
    tmp_path,
    capsys,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    import lmforge.training.memory as memory
    from lmforge.cli.main import main

    monkeypatch.setattr(memory, "available_memory", lambda device: 1 << 10)
    assert main(pretrain_argv(python_docs_data, tmp_path / "a")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training needs about")
    assert not (tmp_path / "a").exists()  # refused before the run directory was written
    argv = pretrain_argv(python_docs_data, tmp_path / "b", "--train.skip_memory_check=true")
    assert main(argv) == 0
