"""The optimizer step both loops share: fp16 through the grad scaler, the schedule, and the
fine-tuning loop gaining pretraining's fp16 guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmforge.cli.main import main
from lmforge.training.optim import build_optimizer
from lmforge.training.precision import Precision
from lmforge.training.step import TrainingStep
from tests.conftest import TINY_MODEL


def _step(precision: Precision, model: nn.Module, schedule=lambda step: 0.5) -> TrainingStep:  # noqa: ANN001
    optimizer = build_optimizer(model, lr=1.0, weight_decay=0.0, betas=(0.9, 0.999))
    return TrainingStep(optimizer=optimizer, parameters=model.parameters(), precision=precision,
                        grad_clip=0.0, schedule=schedule)  # fmt: skip


def _mean_square(model: nn.Module):  # noqa: ANN202
    def micro_loss(batch: torch.Tensor, is_last: bool) -> torch.Tensor:
        return model(batch).float().pow(2).mean()

    return micro_loss


def test_fp16_steps_through_the_scaler_and_reports_the_true_gradient_norm() -> None:
    # Precision("fp16", "cpu") skips from_name's device check: CPU autocast can run fp16 here.
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
    reference = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
    reference.load_state_dict(model.state_dict())
    batches = [torch.randn(4, 8), torch.randn(4, 8)]
    fp16 = _step(Precision("fp16", "cpu"), model)
    fp32 = _step(Precision("fp32", "cpu"), reference)
    assert fp16.scaler.is_enabled() and not fp32.scaler.is_enabled()
    stats = fp16(0, batches, _mean_square(model))
    expected = fp32(0, batches, _mean_square(reference))
    assert fp16.scaler.get_scale() == 2.0**16  # used, and no overflow
    # Unscaled before clipping: the scaled norm would be 65536 times larger.
    assert stats.grad_norm == pytest.approx(expected.grad_norm, rel=1e-2)
    assert all(p.grad is None for p in model.parameters())


def test_lr_comes_from_the_schedule_at_the_given_step() -> None:
    model = nn.Linear(2, 1)
    step = _step(Precision("fp32", "cpu"), model, schedule=lambda step: 0.1 * (step + 1))
    stats = step(4, [torch.ones(1, 2)], _mean_square(model))
    assert stats.lr == pytest.approx(0.5)
    assert [g["lr"] for g in step.optimizer.param_groups] == [stats.lr, stats.lr]


def test_micro_batches_are_told_which_is_last() -> None:
    model = nn.Linear(2, 1)
    seen = []

    def micro_loss(batch: torch.Tensor, is_last: bool) -> torch.Tensor:
        seen.append(is_last)
        return model(batch).sum()

    _step(Precision("fp32", "cpu"), model)(0, [torch.ones(1, 2)] * 3, micro_loss)
    assert seen == [False, False, True]


# Fine-tuning on CPU: fp16 itself is refused there first, so these tests lift the device check to
# reach what lies behind it.


def _classify_files(tmp_path: Path) -> tuple[Path, Path]:
    lines = [f"{i % 2} {'a fine film' if i % 2 else 'a dull film'} number {i} ." for i in range(16)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines[:4]) + "\n")
    return tmp_path / "train.txt", tmp_path / "dev.txt"


def _finetune_fp16(pretrained: Path, tmp_path: Path) -> list[str]:
    train, dev = _classify_files(tmp_path)
    return ["finetune", "classify", str(pretrained), f"--run.dir={tmp_path / 'run'}",
            f"--data.train={train}", f"--data.validation={dev}", "--train.max_steps=2",
            "--train.batch_size=8", "--train.precision=fp16", "--log.progress=false",
            "--log.tensorboard=false"]  # fmt: skip


def test_finetuning_in_fp16_steps_through_the_grad_scaler(
    tiny_pretrained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Precision, "_check_supported", lambda self: None)
    scalers = []
    original = TrainingStep.__call__

    def recording(self: TrainingStep, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        scalers.append(self.scaler)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrainingStep, "__call__", recording)
    assert main(_finetune_fp16(tiny_pretrained("bert-tiny"), tmp_path)) == 0
    assert len(scalers) == 2 and all(scaler.is_enabled() for scaler in scalers)


def test_finetuning_t5_in_fp16_is_refused_with_pretrainings_line(
    tiny_pretrained, python_docs_data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:  # noqa: ANN001
    pretrain = ["pretrain", "t5-tiny", f"--data.path={python_docs_data}",
                f"--run.dir={tmp_path / 'pre'}", *TINY_MODEL, "--train.precision=fp16",
                "--objective.kind=span_corruption"]  # fmt: skip
    assert main(pretrain) == 2
    pretraining_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "overflow in fp16" in pretraining_line
    monkeypatch.setattr(Precision, "_check_supported", lambda self: None)
    assert main(_finetune_fp16(tiny_pretrained("t5-tiny"), tmp_path)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == pretraining_line
    assert not (tmp_path / "run").exists()
