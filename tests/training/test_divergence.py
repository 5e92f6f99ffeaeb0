"""Divergence in the loops: a NaN injected at chosen steps skips those updates, is never
checkpointed, and N bad steps in a row stop the run in one line (or roll it back)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli.main import main
from lmforge.training.trainer import Trainer
from tests.conftest import TINY_MODEL
from tests.training.test_trainer import read_rows


def pretrain_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["pretrain", "gpt2-tiny", f"--data.path={data}", f"--run.dir={run_dir}", *TINY_MODEL,
            "--train.batch_size=4", "--eval.every=0", "--train.warmup_steps=2", *extra]  # fmt: skip


def poison(monkeypatch: pytest.MonkeyPatch, is_bad: Callable[[Trainer, int], bool]) -> None:
    """Make the loss NaN at the (1-based) steps where `is_bad(trainer, step)` holds."""
    original = Trainer._token_weighted_loss

    def patched(self: Trainer, num_targets: int):  # noqa: ANN202
        micro_loss = original(self, num_targets)
        bad = is_bad(self, self.state.step + 1)
        return lambda batch, is_last: micro_loss(batch, is_last) * (math.nan if bad else 1.0)

    monkeypatch.setattr(Trainer, "_token_weighted_loss", patched)


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))


def latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "LATEST").read_text().strip()


def assert_finite(checkpoint: Path) -> None:
    assert all(t.isfinite().all() for t in load_file(checkpoint / "model.safetensors").values())
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    for state in optimizer["state"].values():
        assert all(v.isfinite().all() for v in state.values())


def test_nan_steps_are_skipped_counted_and_never_checkpointed(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    poison(monkeypatch, lambda trainer, step: step in (3, 4))
    args = pretrain_args(python_docs_data, run_dir, "--train.max_steps=8",
                         "--checkpoint.every=2", "--checkpoint.keep_last=2")  # fmt: skip
    assert main(args) == 0
    rows = [row for row in read_rows(run_dir) if "loss" in row]
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert [math.isnan(row["loss"]) for row in rows] == [s in (3, 4) for s in range(1, 9)]
    assert [row["skipped_steps"] for row in rows] == [0, 0, 1, 2, 2, 2, 2, 2]
    # Step 4 closed a streak of skipped updates: no checkpoint there (the weights are those of
    # step 2 anyway); every saved checkpoint is finite.
    assert checkpoints(run_dir) == ["step-0000006", "step-0000008"]
    assert latest(run_dir) == "step-0000008"
    for name in checkpoints(run_dir):
        assert_finite(run_dir / "checkpoints" / name)
    state = json.loads((run_dir / "checkpoints/step-0000008/trainer_state.json").read_text())
    assert state["guard"]["skipped_steps"] == 2 and state["guard"]["consecutive_bad"] == 0


def test_n_bad_steps_in_a_row_stop_in_one_line_keeping_the_last_good_checkpoint(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    run_dir = tmp_path / "run"
    poison(monkeypatch, lambda trainer, step: step >= 5)
    args = pretrain_args(python_docs_data, run_dir, "--train.max_steps=20", "--checkpoint.every=1",
                         "--checkpoint.keep_last=2", "--train.max_bad_steps=3")  # fmt: skip
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    good = run_dir / "checkpoints" / "step-0000004"
    assert lines[-1] == (
        "error: training diverged at step 7: 3 skipped updates in a row (last: loss is nan); "
        f"the last good checkpoint is {good}; rerun with a lower --train.lr (now 0.001) or more "
        "--train.warmup_steps (or --train.on_divergence=rollback)"
    )
    # keep-last kept the newest good checkpoint: nothing was saved during the bad steps.
    assert checkpoints(run_dir) == ["step-0000003", "step-0000004"]
    assert latest(run_dir) == "step-0000004"
    assert_finite(good)


def test_a_diverging_run_rolls_back_with_a_lower_learning_rate(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    # Diverges at the full learning rate only: after the rollback it trains on.
    poison(monkeypatch, lambda trainer, step: step >= 5 and trainer.state.lr_scale == 1.0)
    args = pretrain_args(python_docs_data, run_dir, "--train.max_steps=8", "--checkpoint.every=4",
                         "--train.max_bad_steps=2", "--train.on_divergence=rollback",
                         "--train.rollback_lr_factor=0.25")  # fmt: skip
    assert main(args) == 0
    rows = read_rows(run_dir)
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, 9))  # no duplicates
    assert {"step": 4, "rollback": 1, "lr_scale": 0.25} in rows
    assert all(math.isfinite(row["loss"]) for row in rows if "loss" in row)
    lrs = {row["step"]: row["lr"] for row in rows if "lr" in row}
    state = json.loads((run_dir / "checkpoints/step-0000008/trainer_state.json").read_text())
    assert state["lr_scale"] == 0.25 and state["rollbacks"] == 1
    # The lowered rate is what a resumed run continues with: it is in the step-4 checkpoint too.
    state = json.loads((run_dir / "checkpoints/step-0000004/trainer_state.json").read_text())
    assert state["lr_scale"] == 0.25
    assert lrs[5] < lrs[4] / 2


def test_rollbacks_are_limited(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    run_dir = tmp_path / "run"
    poison(monkeypatch, lambda trainer, step: step >= 3)
    args = pretrain_args(python_docs_data, run_dir, "--train.max_steps=10", "--checkpoint.every=2",
                         "--train.max_bad_steps=1", "--train.on_divergence=rollback",
                         "--train.max_rollbacks=2")  # fmt: skip
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: training diverged at step 3: 1 skipped update in a row")
    assert "after 2 rollbacks; the last good checkpoint is" in line
    assert "(now 0.00025)" in line  # 1e-3 x 0.5 x 0.5
