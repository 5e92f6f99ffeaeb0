"""`lmforge pretrain --optim.kind=muon`: interrupted and resumed it equals the uninterrupted run bit
for bit (weights and optimizer state too), on one process and on two DDP ranks, and an AdamW
checkpoint is refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli.main import main
from lmforge.training.trainer import Trainer
from tests.conftest import REPO_ROOT
from tests.training.test_trainer import free_port, pretrain_args, train_losses

MUON = ["--optim.kind=muon", "--optim.muon_lr=2e-3", "--train.batch_size=4", "--eval.every=0"]


@pytest.fixture(autouse=True)
def _no_peak_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    # The peak matmul rate only scales the reported MFU; measuring it takes seconds per run.
    monkeypatch.setattr("lmforge.training.run.measure_matmul_peak", lambda *_: 1e12)


def _final_state(run_dir: Path, step: int) -> tuple[dict, dict]:
    checkpoint = run_dir / "checkpoints" / f"step-{step:07d}"
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    return load_file(checkpoint / "model.safetensors"), optimizer


def _assert_equal_states(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_equal_states(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_equal_states(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize(("preset", "data_fixture", "objective"), [
    ("gpt2-tiny", "python_docs_data", "clm"),
    pytest.param("t5-tiny", "python_docs_unigram_data", "span_corruption",
                 marks=pytest.mark.slow)])  # fmt: skip
def test_muon_resume_equals_uninterrupted_training(
    preset: str,
    data_fixture: str,
    objective: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = request.getfixturevalue(data_fixture)
    common = [*MUON, f"--objective.kind={objective}", "--train.max_steps=6",
              "--checkpoint.every=3", "--model.dropout=0.1"]  # fmt: skip
    straight = tmp_path / "straight"
    assert main(pretrain_args(preset, data, straight, *common)) == 0

    interrupted = tmp_path / "interrupted"
    original = Trainer.maybe_checkpoint

    def crash_after_first_checkpoint(self: Trainer) -> None:
        original(self)
        if self.state.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "maybe_checkpoint", crash_after_first_checkpoint)
    assert main(pretrain_args(preset, data, interrupted, *common)) == 130
    monkeypatch.setattr(Trainer, "maybe_checkpoint", original)
    assert main(pretrain_args(preset, data, interrupted, *common)) == 0

    assert train_losses(interrupted) == train_losses(straight)
    weights, optimizer = _final_state(straight, 6)
    assert optimizer.keys() == {"adamw", "muon"} and optimizer["muon"]["state"]
    _assert_equal_states((weights, optimizer), _final_state(interrupted, 6))


def test_adamw_checkpoint_is_refused_by_muon(
    python_docs_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    args = ["--train.max_steps=1", "--train.batch_size=2", "--eval.every=0"]
    assert main(pretrain_args("gpt2-tiny", python_docs_data, run_dir, *args)) == 0
    capsys.readouterr()
    more = ["--train.max_steps=2", "--train.batch_size=2", "--optim.kind=muon"]
    assert main(pretrain_args("gpt2-tiny", python_docs_data, run_dir, *more)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "--optim.kind=adamw" in error


def _torchrun(data: Path, run_dir: Path, *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
               f"--master-port={free_port()}", "-m", "lmforge",
               *pretrain_args("gpt2-tiny", data, run_dir, *args)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.dist
def test_muon_on_two_ranks_resumes_exactly_and_equals_one_process(
    python_docs_data: Path, tmp_path: Path
) -> None:
    # A constant rate after the warmup: the 2-step run is the 4-step run's first half, so the
    # second half can resume from its checkpoint.
    common = [*MUON, "--train.micro_batch_size=2", "--train.decay=constant",
              "--train.warmup_steps=1", "--run.device=cpu"]  # fmt: skip
    single = tmp_path / "single"
    assert main(pretrain_args("gpt2-tiny", python_docs_data, single, "--train.max_steps=4",
                              *common)) == 0  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _torchrun(python_docs_data, straight, "--train.max_steps=4", *common)
    _torchrun(python_docs_data, resumed, "--train.max_steps=2", *common)
    _torchrun(python_docs_data, resumed, "--train.max_steps=4", *common)

    # DDP all-reduces the gradients, then each rank runs the same Muon update.
    assert train_losses(straight) == pytest.approx(train_losses(single), abs=1e-5)
    assert train_losses(resumed) == train_losses(straight)
    _assert_equal_states(_final_state(straight, 4), _final_state(resumed, 4))
