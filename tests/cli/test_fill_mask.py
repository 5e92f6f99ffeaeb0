"""`lmforge fill-mask`: top-k predictions with probabilities; bad input gets one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def bert_run(python_docs_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("bert") / "run"
    args = ["pretrain", "bert-tiny", f"--data.path={python_docs_data}", f"--run.dir={run_dir}"]
    assert main([*args, *TINY_MODEL, "--train.max_steps=2", "--train.batch_size=4"]) == 0
    return run_dir


def test_prints_top_k_tokens_with_probabilities(
    bert_run: Path, capsys: pytest.CaptureFixture
) -> None:
    # python_docs_data is byte-level BPE: [MASK] is accepted and rewritten to <mask>.
    assert main(["fill-mask", str(bert_run), "The capital of France is [MASK].", "--top-k=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["score", "token", "sequence"]
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores) and sum(scores) <= 1 + 1e-6
    assert all(
        line.split(maxsplit=2)[2].startswith("The capital of France is") for line in lines[1:]
    )


def test_text_without_mask_is_one_line_and_exit_2(
    bert_run: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["fill-mask", str(bert_run), "The capital of France is Paris."]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the text holds no mask token") and err.count("\n") == 1


def test_mask_rate_outside_zero_one_is_one_line_and_exit_2(
    python_docs_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["pretrain", "bert-tiny", f"--data.path={python_docs_data}", f"--run.dir={tmp_path}"]
    assert main([*args, "--objective.mask_rate=1.5"]) == 2
    assert capsys.readouterr().err == "error: objective.mask_rate must be in (0, 1), got 1.5\n"
