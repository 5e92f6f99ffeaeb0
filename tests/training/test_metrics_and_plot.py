"""metrics.jsonl writing, resume truncation, the progress bar and the curves plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.errors import LmforgeError
from lmforge.training.metrics import MetricsWriter, read_metrics
from lmforge.training.plot import plot_run
from lmforge.training.progress import TrainingProgress


def _write_run(run_dir: Path, steps: int = 10, eval_every: int = 5) -> None:
    with MetricsWriter(run_dir, tensorboard=False, is_writer=True) as writer:
        for step in range(1, steps + 1):
            loss = 4.0 * math.exp(-step / 5) + 1.0
            writer.log({"step": step, "loss": loss, "lr": 1e-3, "tokens_seen": step * 64})
            if step % eval_every == 0:
                writer.log({"step": step, "val_loss": loss + 0.1, "val_bpb": loss / 3})


def test_rows_are_written_one_per_line(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False, is_writer=True) as writer:
        writer.log({"step": 1, "loss": torch.tensor(2.5), "lr": 1e-3})
        assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.5, "lr": 1e-3}]  # flushed


def test_truncate_after_drops_later_steps(tmp_path: Path) -> None:
    _write_run(tmp_path, steps=10)
    writer = MetricsWriter(tmp_path, tensorboard=False, is_writer=True)
    writer.truncate_after(5)
    writer.log({"step": 6, "loss": 0.5})
    writer.close()
    steps = [row["step"] for row in read_metrics(tmp_path)]
    assert steps == [1, 2, 3, 4, 5, 5, 6]  # step 5: a train row and an eval row


def test_non_writer_writes_nothing(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=True, is_writer=False) as writer:
        writer.log({"step": 1, "loss": 1.0})
    assert not any(tmp_path.iterdir())


def test_tensorboard_mirror_writes_events(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    with MetricsWriter(tmp_path, tensorboard=True, is_writer=True) as writer:
        writer.log({"step": 1, "loss": 1.0})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_row_without_step_is_rejected(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False, is_writer=True) as writer:
        with pytest.raises(ValueError, match="step"):
            writer.log({"loss": 1.0})


def test_cut_off_last_line_is_skipped(tmp_path: Path) -> None:
    _write_run(tmp_path, steps=3, eval_every=100)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "lo')
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2, 3]


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with TrainingProgress(total=10, initial=2) as progress:
        progress.update(3, loss=1.25, lr=3e-4, rate=12345.0)
        progress.write("eval: val_loss 1.3")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "eval: val_loss 1.3" in captured.err and "12.3k" in captured.err


def test_progress_is_silent_off_the_main_process(capsys: pytest.CaptureFixture[str]) -> None:
    with TrainingProgress(total=10, is_main=False) as progress:
        progress.update(1, loss=1.0, lr=1e-3, rate=1.0)
        progress.write("hello")
    assert capsys.readouterr() == ("", "")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    _write_run(tmp_path)
    path = plot_run(tmp_path)
    assert path == tmp_path / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plot_command_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path, steps=4, eval_every=100)  # no eval rows: two panels
    assert main(["plot", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "curves.png")


def test_plot_without_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="metrics.jsonl holds no loss"):
        plot_run(tmp_path)
    assert main(["plot", str(tmp_path / "missing")]) == 2
