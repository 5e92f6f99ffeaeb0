"""Warmup-stable-decay: its shape, and a run extended from its stable phase that goes on exactly as
the longer run planned from the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.config.loading import load_run_config
from lmforge.errors import LmforgeError
from lmforge.training.schedules import lr_at, wsd_decay_start
from tests.training.test_trainer import pretrain_args, read_rows, train_losses

MAX_LR, WARMUP, MAX_STEPS = 1.0, 10, 100


def _wsd(step: int, cooldown: str = "linear", max_steps: int = MAX_STEPS) -> float:
    return lr_at(step, max_lr=MAX_LR, warmup_steps=WARMUP, max_steps=max_steps, decay="wsd",
                 min_lr_ratio=0.1, decay_fraction=0.2, cooldown=cooldown)  # fmt: skip


@pytest.mark.parametrize("cooldown", ["linear", "1-sqrt"])
def test_wsd_warms_up_holds_the_peak_then_cools_down(cooldown: str) -> None:
    assert wsd_decay_start(WARMUP, MAX_STEPS, 0.2) == 80
    assert _wsd(0, cooldown) == pytest.approx(0.1)
    assert _wsd(WARMUP - 1, cooldown) == MAX_LR  # warmup ends at the peak
    assert {_wsd(s, cooldown) for s in range(WARMUP, 81)} == {MAX_LR}  # stable to decay start
    cooldown_lrs = [_wsd(s, cooldown) for s in range(80, 121)]
    assert all(a > b for a, b in zip(cooldown_lrs[:20], cooldown_lrs[1:21], strict=True))
    assert _wsd(MAX_STEPS, cooldown) == pytest.approx(0.1)  # min_lr_ratio * lr at the end
    assert _wsd(MAX_STEPS + 20, cooldown) == pytest.approx(0.1)


def test_cooldown_shapes_at_the_midpoint() -> None:
    # Halfway through the cooldown: linear is halfway down; 1-sqrt has 1 - sqrt(1/2) of the way
    # left, 0.29 of (max - min) above min.
    assert _wsd(90, "linear") == pytest.approx(0.1 + 0.9 * 0.5)
    assert _wsd(90, "1-sqrt") == pytest.approx(0.1 + 0.9 * (1 - 0.5**0.5))


def test_stable_phase_does_not_depend_on_max_steps() -> None:
    assert [_wsd(s) for s in range(80)] == [_wsd(s, max_steps=1000) for s in range(80)]


def test_decay_never_starts_inside_the_warmup() -> None:
    assert wsd_decay_start(10, 12, 0.5) == 10
    assert lr_at(9, max_lr=1.0, warmup_steps=10, max_steps=12, decay="wsd", decay_fraction=0.5) == 1


def test_bad_wsd_keys_are_one_line_errors() -> None:
    overrides = ["--run.dir=-", "--data.path=-"]
    with pytest.raises(LmforgeError, match="train.decay_fraction must be in"):
        load_run_config("gpt2-tiny", [*overrides, "--train.decay_fraction=0"])
    with pytest.raises(LmforgeError, match="choose one of linear, 1-sqrt"):
        load_run_config("gpt2-tiny", [*overrides, "--train.cooldown=cosine"])


def test_run_extended_from_its_stable_phase_equals_the_longer_run(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peak matmul rate only scales the reported MFU; measuring it takes seconds per run.
    monkeypatch.setattr("lmforge.training.run.measure_matmul_peak", lambda *_: 1e12)
    common = ["--train.decay=wsd", "--train.decay_fraction=0.5", "--train.warmup_steps=2",
              "--train.batch_size=4", "--model.dropout=0.1", "--eval.every=0",
              "--train.cooldown=1-sqrt"]  # fmt: skip
    long = tmp_path / "long"
    assert main(pretrain_args("gpt2-tiny", python_docs_data, long, "--train.max_steps=12",
                              *common)) == 0  # fmt: skip
    # Planned for 6 steps: the cooldown starts at step 3, and a checkpoint is kept there.
    short = tmp_path / "short"
    assert main(pretrain_args("gpt2-tiny", python_docs_data, short, "--train.max_steps=6",
                              "--checkpoint.every=3", *common)) == 0  # fmt: skip
    lrs = [row["lr"] for row in read_rows(short) if "lr" in row]
    assert lrs[2] == lrs[3] > lrs[4] > lrs[5]  # it did cool down (rows are after steps 1..6)
    # Extended to 12 steps from the stable-phase checkpoint, into a run directory of its own.
    extended = tmp_path / "extended"
    checkpoint = short / "checkpoints" / "step-0000003"
    assert main(pretrain_args("gpt2-tiny", python_docs_data, extended, "--train.max_steps=12",
                              f"--resume={checkpoint}", *common)) == 0  # fmt: skip

    assert [row["step"] for row in read_rows(extended) if "loss" in row] == list(range(4, 13))
    assert train_losses(short)[:3] == train_losses(long)[:3]
    assert train_losses(extended) == train_losses(long)[3:]
