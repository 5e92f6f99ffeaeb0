"""`lmforge predict` (and the export of a fine-tuned run) refuse a run that never finished unless
told `--allow-partial`, and one without any checkpoint always: one line each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmforge.cli.main import main

FAST = ["--log.progress=false", "--log.tensorboard=false", "--train.batch_size=4",
        "--train.max_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tiny_pretrained, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetuned")
    train = root / "train.txt"
    train.write_text("".join(f"{i % 2} text number {i} .\n" for i in range(8)))
    run = root / "run"
    assert main(["finetune", "classify", str(tiny_pretrained("bert-tiny")), f"--run.dir={run}",
                 f"--data.train={train}", f"--data.validation={train}", *FAST]) == 0  # fmt: skip
    return run


def _partial_copy(run: Path, tmp_path: Path) -> Path:
    """The run as a crash before its final evaluation leaves it: no metrics.json."""
    copy = tmp_path / "partial"
    shutil.copytree(run, copy)
    (copy / "metrics.json").unlink()
    return copy


def _predict(run: Path, tmp_path: Path, *extra: str) -> list[str]:
    inputs = tmp_path / "in.txt"
    inputs.write_text("a new text .\n")
    return ["predict", str(run), "--input", str(inputs), "--output", str(tmp_path / "out"), *extra]


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_predict_uses_a_finished_run(finished_run, tmp_path):
    assert main(_predict(finished_run, tmp_path)) == 0
    assert (tmp_path / "out").read_text().count("\n") == 1


def test_predict_refuses_an_unfinished_run(finished_run, tmp_path, capsys):
    partial = _partial_copy(finished_run, tmp_path)
    capsys.readouterr()
    assert main(_predict(partial, tmp_path)) == 2
    line = _one_error_line(capsys)
    assert f"{partial} is an unfinished fine-tuning run (no metrics.json)" in line
    assert "--allow-partial" in line
    assert not (tmp_path / "out").exists()


def test_allow_partial_uses_the_best_checkpoint_so_far(finished_run, tmp_path):
    partial = _partial_copy(finished_run, tmp_path)
    assert main(_predict(partial, tmp_path, "--allow-partial")) == 0
    assert (tmp_path / "out").read_text().count("\n") == 1


def test_a_run_without_any_checkpoint_is_refused_even_when_partial(finished_run, tmp_path, capsys):
    partial = _partial_copy(finished_run, tmp_path)
    shutil.rmtree(partial / "checkpoints")
    capsys.readouterr()
    assert main(_predict(partial, tmp_path, "--allow-partial")) == 2
    assert "holds no checkpoint: the fine-tuning run never finished an evaluation" in (
        _one_error_line(capsys)
    )


def test_export_refuses_an_unfinished_run(finished_run, tmp_path, capsys):
    pytest.importorskip("transformers")
    partial = _partial_copy(finished_run, tmp_path)
    capsys.readouterr()
    assert main(["convert", "--to-hf", str(partial), str(tmp_path / "hf")]) == 2
    assert "is an unfinished fine-tuning run" in _one_error_line(capsys)
    assert not (tmp_path / "hf").exists()
