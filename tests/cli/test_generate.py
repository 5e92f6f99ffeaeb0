"""`lmforge generate` on trained checkpoints of each generative family."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from tests.conftest import TINY_MODEL


@pytest.mark.parametrize(
    ("preset", "objective", "data_fixture", "extra"),
    [
        ("gpt2-tiny", "clm", "python_docs_data", ["--top-p", "0.9"]),
        ("bloom-tiny", "clm", "python_docs_data", ["--num-beams", "3"]),
        ("t5-tiny", "span_corruption", "python_docs_unigram_data", ["--num-beams", "3"]),
        ("bart-tiny", "bart_denoising", "python_docs_data", ["--temperature", "0"]),
    ],
)
def test_generate_prints_text_and_speed(
    preset, objective, data_fixture, extra, request, tmp_path: Path, capsys
) -> None:
    data = request.getfixturevalue(data_fixture)
    run_dir = tmp_path / "run"
    args = ["pretrain", preset, f"--data.path={data}", f"--run.dir={run_dir}", *TINY_MODEL,
            f"--objective.kind={objective}", "--train.max_steps=2",
            "--train.batch_size=2"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt", "def", "--max-new-tokens", "8", *extra]) == 0
    err = capsys.readouterr().err
    assert "tokens/s" in err
