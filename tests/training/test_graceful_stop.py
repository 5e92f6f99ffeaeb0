"""Graceful stop: SIGTERM ends pretraining after the current step with a checkpoint and one line,
resuming from it is exact, a signal during a checkpoint write lets the write finish, and
fine-tuning stops cleanly keeping its best checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmforge.training.checkpoint as checkpoint_module
from lmforge.cli.main import main
from lmforge.training.finetune import _Loop
from tests.conftest import REPO_ROOT, TINY_MODEL
from tests.training.test_trainer import read_rows, train_losses

MAX_STEPS = 10
STOP_LINE = re.compile(
    r"stopped at step (\d+) \(SIGTERM\), checkpoint saved; rerun the same command to continue"
)

# The child runs the real command line with each step slowed down, so that the signal lands in
# the middle of the run whatever the machine's speed.
_SLOW_CHILD = """
import sys, time
from lmforge.training.trainer import Trainer
original = Trainer.train_step
def slow_step(self):
    time.sleep(0.3)
    return original(self)
Trainer.train_step = slow_step
from lmforge.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def pretrain_args(data: Path, run_dir: Path) -> list[str]:
    return ["pretrain", "gpt2-tiny", f"--data.path={data}", f"--run.dir={run_dir}", *TINY_MODEL,
            "--train.batch_size=4", f"--train.max_steps={MAX_STEPS}", "--checkpoint.every=4",
            "--eval.every=0", "--model.dropout=0.1"]  # fmt: skip


@pytest.fixture(scope="module")
def straight(python_docs_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run to compare with."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert main(pretrain_args(python_docs_data, run_dir)) == 0
    return run_dir


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step-{MAX_STEPS:07d}" / "model.safetensors")


def assert_same_run(run_dir: Path, straight: Path) -> None:
    assert train_losses(run_dir) == train_losses(straight)
    assert [row["step"] for row in read_rows(run_dir)] == [
        row["step"] for row in read_rows(straight)
    ]
    expected = final_weights(straight)
    assert all(
        torch.equal(tensor, expected[name]) for name, tensor in final_weights(run_dir).items()
    )


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and any(row.get("step", 0) >= step for row in read_rows(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the child never reached step {step}: {process.poll()}")


def test_sigterm_saves_the_current_step_and_resuming_is_exact(
    python_docs_data: Path, straight: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", _SLOW_CHILD, *pretrain_args(python_docs_data, run_dir)]
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(run_dir, 2, child, timeout=120)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 143, stderr[-2000:]
    match = STOP_LINE.fullmatch(stderr.strip().splitlines()[-1])
    assert match, stderr[-2000:]
    step = int(match.group(1))
    assert 2 <= step < MAX_STEPS
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "LATEST").read_text().strip() == f"step-{step:07d}"
    assert max(row["step"] for row in read_rows(run_dir)) == step  # the stop step is logged
    assert main(pretrain_args(python_docs_data, run_dir)) == 0  # the same command continues
    assert_same_run(run_dir, straight)


def test_a_signal_during_a_checkpoint_write_lets_it_finish_then_stops(
    python_docs_data: Path, straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    run_dir = tmp_path / "run"
    original = checkpoint_module._save_model

    def signal_mid_write(model: torch.nn.Module, path: Path) -> None:
        original(model, path)  # the weights are written; optimizer, state and publishing remain
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(checkpoint_module, "_save_model", signal_mid_write)
    assert main(pretrain_args(python_docs_data, run_dir)) == 143
    monkeypatch.undo()
    assert STOP_LINE.fullmatch(capsys.readouterr().err.strip().splitlines()[-1]).group(1) == "4"
    checkpoint = run_dir / "checkpoints" / "step-0000004"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "model.safetensors", "model_config.json", "optimizer.pt", "trainer_state.json"]  # fmt: skip
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["LATEST", "step-0000004"]
    assert main(pretrain_args(python_docs_data, run_dir)) == 0
    assert_same_run(run_dir, straight)


def test_a_signal_during_the_last_step_lets_the_run_finish(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.training.trainer import Trainer

    original = Trainer.train_step

    def signal_in_the_last_step(self: Trainer):  # noqa: ANN202
        if self.state.step + 1 == MAX_STEPS:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", signal_in_the_last_step)
    run_dir = tmp_path / "run"
    assert main(pretrain_args(python_docs_data, run_dir)) == 0
    assert (run_dir / "curves.png").is_file()  # finished: plotted


def _classify_files(tmp_path: Path) -> tuple[Path, Path]:
    lines = [f"{i % 2} {'a fine film' if i % 2 else 'a dull film'} number {i} ." for i in range(16)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines[:4]) + "\n")
    return tmp_path / "train.txt", tmp_path / "dev.txt"


def finetune_args(pretrained: Path, tmp_path: Path, *extra: str) -> list[str]:
    train, dev = _classify_files(tmp_path)
    return ["finetune", "classify", str(pretrained), f"--run.dir={tmp_path / 'run'}",
            f"--data.train={train}", f"--data.validation={dev}", "--train.max_steps=6",
            "--train.batch_size=4", "--eval.every=2", "--log.progress=false",
            "--log.tensorboard=false", "--log.every=1", *extra]  # fmt: skip


def test_finetuning_stops_on_sigterm_keeping_its_best_checkpoint(
    tiny_pretrained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    original = _Loop.train_step

    def signal_at_step_3(self: _Loop, step: int, progress):  # noqa: ANN001, ANN202
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step; the step still finishes
        return original(self, step, progress)

    monkeypatch.setattr(_Loop, "train_step", signal_at_step_3)
    assert main(finetune_args(tiny_pretrained("bert-tiny"), tmp_path)) == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"stopped at step 3 of 6 \(SIGTERM\); kept the best checkpoint so far \(step 2, accuracy "
        r"[\d.]+\) and its predictions; metrics\.json is written by finished runs only; "
        r"fine-tuning cannot resume a stopped run: rerun the command with a new --run\.dir to "
        r"train again",
        line,
    ), line
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "LATEST").read_text().strip() == "step-0000002"
    assert (run_dir / "predictions.jsonl").is_file()
    assert not (run_dir / "metrics.json").exists()
    assert max(row["step"] for row in read_rows(run_dir)) == 3


def test_finetuning_divergence_stops_in_one_line_keeping_its_best_checkpoint(
    tiny_pretrained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    from lmforge.tasks.base import task_class

    task = task_class("classify")
    original = task.loss
    calls = []

    def nan_after_two_steps(self, model, batch):  # noqa: ANN001, ANN202
        calls.append(1)
        return original(self, model, batch) * (float("nan") if len(calls) > 2 else 1.0)

    monkeypatch.setattr(task, "loss", nan_after_two_steps)
    args = finetune_args(tiny_pretrained("bert-tiny"), tmp_path, "--train.max_bad_steps=2")
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "error: fine-tuning diverged at step 4: 2 skipped updates in a row (last: loss is nan); "
        "kept the best checkpoint so far (step 2, accuracy"
    ), line
    assert line.endswith("rerun with a lower --train.lr (now 0.0001) in a new --run.dir")
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000002"
    assert all(t.isfinite().all() for t in load_file(checkpoint / "model.safetensors").values())


# Two gloo ranks where only rank 1 meets the fault: the decision must still be the same on both.
_RANK_FAULT = """
import math, os, signal, sys
from lmforge.training.trainer import Trainer
rank, mode, at = int(os.environ["RANK"]), sys.argv[1], int(sys.argv[2])
step, weighted_loss = Trainer.train_step, Trainer._token_weighted_loss
def signalled_step(self):
    if rank == 1 and self.state.step + 1 == at:
        os.kill(os.getpid(), signal.SIGTERM)
    return step(self)
def poisoned_loss(self, num_targets):
    micro_loss, bad = weighted_loss(self, num_targets), rank == 1 and self.state.step + 1 == at
    return lambda batch, is_last: micro_loss(batch, is_last) * (math.nan if bad else 1.0)
Trainer.train_step, Trainer._token_weighted_loss = signalled_step, poisoned_loss
if mode == "sigterm":
    Trainer._token_weighted_loss = weighted_loss
else:
    Trainer.train_step = step
from lmforge.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def run_two_ranks(tmp_path: Path, mode: str, args: list[str]) -> subprocess.CompletedProcess:
    from tests.training.test_trainer import free_port

    script = tmp_path / "rank_fault.py"
    script.write_text(_RANK_FAULT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
               f"--master-port={free_port()}", str(script), mode, "3", *args,
               "--run.device=cpu", "--train.micro_batch_size=2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.dist
def test_all_ranks_stop_after_the_same_step_when_one_is_signalled(
    python_docs_data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_two_ranks(tmp_path, "sigterm", pretrain_args(python_docs_data, run_dir))
    assert result.returncode != 0
    assert "stopped at step 3 (SIGTERM), checkpoint saved" in result.stderr, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "LATEST").read_text().strip() == "step-0000003"
    assert max(row["step"] for row in read_rows(run_dir)) == 3


@pytest.mark.dist
def test_all_ranks_skip_the_update_when_one_has_a_nan_loss(
    python_docs_data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_two_ranks(tmp_path, "nan", pretrain_args(python_docs_data, run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for row in read_rows(run_dir) if "loss" in row]
    assert [row["skipped_steps"] for row in rows] == [0, 0] + [1] * (MAX_STEPS - 2)
    assert all(t.isfinite().all() for t in final_weights(run_dir).values())
