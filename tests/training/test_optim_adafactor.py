"""Adafactor (`--optim.kind=adafactor`, fine-tuning's `--train.optimizer=adafactor`): its groups and
the schedule's rate, the relative step it takes, exact resume through a checkpoint, and the
one-line refusal of the other optimizer's state in both directions."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from lmforge.cli.main import main
from lmforge.config.finetune import FinetuneTrainSection
from lmforge.config.loading import load_run_config
from lmforge.config.schema import OptimSection
from lmforge.models.lm import build_model
from lmforge.training.optim import Adafactor, build_optimizer
from lmforge.training.schedules import set_lr
from lmforge.training.trainer import Trainer
from tests.training.test_optim_muon_training import _assert_equal_states, _final_state
from tests.training.test_trainer import pretrain_args, train_losses

TINY = ["--model.d_model=32", "--model.num_heads=2", "--model.num_layers=2", "--model.d_ff=64",
        "--model.vocab_size=64", "--run.dir=-", "--data.path=-"]  # fmt: skip
ADAFACTOR = OptimSection(kind="adafactor")


@pytest.fixture(autouse=True)
def _no_peak_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    # The peak matmul rate only scales the reported MFU; measuring it takes seconds per run.
    monkeypatch.setattr("lmforge.training.run.measure_matmul_peak", lambda *_: 1e12)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(load_run_config("t5-tiny", TINY).model)


def adafactor(model: nn.Module, lr: float = 1e-3) -> Adafactor:
    optimizer = build_optimizer(model, lr=lr, weight_decay=0.1, betas=(0.9, 0.95), optim=ADAFACTOR)
    assert isinstance(optimizer, Adafactor)
    return optimizer


def test_adafactor_takes_every_parameter_in_the_decay_groups() -> None:
    model = tiny_model()
    optimizer = adafactor(model)
    decay, no_decay = optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    every = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))
    assert all(p.ndim >= 2 for p in decay["params"])
    set_lr(optimizer, 4e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [4e-4, 4e-4]


def test_fine_tuning_key_selects_adafactor() -> None:
    assert FinetuneTrainSection(optimizer="adafactor").optimizer == "adafactor"
    optimizer = build_optimizer(
        tiny_model(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), kind="adafactor"
    )
    assert isinstance(optimizer, Adafactor)
    assert type(build_optimizer(tiny_model(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999),
                                kind="adamw")) is torch.optim.AdamW  # fmt: skip


def test_first_step_is_relative_to_the_parameter_scale() -> None:
    # Step 1: the second moment is g^2 itself, so the update is sign(g) (RMS 1, unclipped) and the
    # step max(1e-3, RMS(w)) * min(lr, 1): documented in optim.Adafactor.
    weight = nn.Parameter(torch.full((3, 4), 0.5))
    optimizer = Adafactor([weight], lr=1e-2, foreach=True)
    weight.grad = torch.tensor([[1.0, -2.0, 3.0, -4.0]] * 3)
    optimizer.step()
    expected = 0.5 - 0.5 * 1e-2 * torch.sign(weight.grad)
    assert torch.allclose(weight.detach(), expected, atol=1e-6)


def _train(model: nn.Module, optimizer: Adafactor, steps: range) -> None:
    for step in steps:
        ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(step))
        loss = model(ids[:, :5], decoder_input_ids=ids[:, 4:8], labels=ids[:, 5:]).loss_sum
        set_lr(optimizer, 1e-3 * (1 - step / 10))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _round_trip(state: dict) -> dict:
    """Through torch.save and the weights-only load that checkpoints use."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_round_trip_resumes_bit_for_bit() -> None:
    straight = tiny_model()
    _train(straight, adafactor(straight), range(6))

    first = tiny_model()
    optimizer = adafactor(first)
    _train(first, optimizer, range(3))
    weights, state = _round_trip(first.state_dict()), _round_trip(optimizer.state_dict())
    assert state.keys() == {"adafactor"} and state["adafactor"]["state"]

    resumed = tiny_model()
    resumed.load_state_dict(weights)
    optimizer = adafactor(resumed)
    optimizer.load_state_dict(state)
    _train(resumed, optimizer, range(3, 6))
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_pretraining_resume_equals_uninterrupted_training(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = ["--optim.kind=adafactor", "--train.lr=1e-2", "--train.batch_size=4",
              "--eval.every=0", "--train.max_steps=6", "--checkpoint.every=3"]  # fmt: skip
    straight = tmp_path / "straight"
    assert main(pretrain_args("gpt2-tiny", python_docs_data, straight, *common)) == 0

    interrupted = tmp_path / "interrupted"
    original = Trainer.maybe_checkpoint

    def crash_after_first_checkpoint(self: Trainer) -> None:
        original(self)
        if self.state.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "maybe_checkpoint", crash_after_first_checkpoint)
    assert main(pretrain_args("gpt2-tiny", python_docs_data, interrupted, *common)) == 130
    monkeypatch.setattr(Trainer, "maybe_checkpoint", original)
    assert main(pretrain_args("gpt2-tiny", python_docs_data, interrupted, *common)) == 0

    assert train_losses(interrupted) == train_losses(straight)
    weights, optimizer = _final_state(straight, 6)
    assert optimizer.keys() == {"adafactor"}
    _assert_equal_states((weights, optimizer), _final_state(interrupted, 6))


@pytest.mark.parametrize(("first", "then"), [("adamw", "adafactor"), ("adafactor", "adamw")])
def test_the_other_optimizers_checkpoint_is_refused_in_one_line(
    first: str, then: str, python_docs_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run_dir = tmp_path / "run"
    args = ["--train.batch_size=2", "--eval.every=0"]
    assert main(pretrain_args("gpt2-tiny", python_docs_data, run_dir, *args,
                              "--train.max_steps=1", f"--optim.kind={first}")) == 0  # fmt: skip
    capsys.readouterr()
    assert main(pretrain_args("gpt2-tiny", python_docs_data, run_dir, *args,
                              "--train.max_steps=2", f"--optim.kind={then}")) == 2  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "does not fit this optimizer" in error
