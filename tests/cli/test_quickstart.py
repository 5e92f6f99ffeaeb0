"""The quickstart: one command from raw text to a trained model and a sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.cli.quickstart_cmd import OVERHEAD, size_run
from lmforge.data.sources import iter_documents
from lmforge.errors import LmforgeError


@pytest.mark.slow
def test_quickstart_runs_from_text_to_sample(tmp_path: Path, capsys) -> None:
    documents = iter_documents("builtin:python-docs")
    text = "\n\n".join(d.text for _, d in zip(range(600), documents, strict=False))
    corpus = tmp_path / "docs.txt"
    corpus.write_text(text)
    out = tmp_path / "qs"
    args = ["quickstart", "--input", str(corpus), "--out", str(out), "--minutes", "0.01"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[4/4] sampling from" in printed and "checkpoints/best" in printed
    assert "training tokens" in printed and "passes -> model gpt2-tiny, dropout" in printed
    assert "bits per byte" in printed and "best  step" in printed
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 10  # the minimum when the budget is smaller than ten steps
    assert "val_bpb" in rows[-1]
    assert (out / "run" / "curves.png").is_file()
    assert rows[-1]["step"] == 10 and (out / "run" / "checkpoints" / "best").is_dir()
    # A second quickstart into the same folder is refused instead of mixing runs.
    assert main(args) == 2


# Step times as measured on the 2-core machine (gpt2-tiny in bf16) and the FLOPs ratio of 6 x 384.
TIMES = {"gpt2-tiny": 0.16, "6x384": 0.48}
SHAKESPEARE_TRAIN_TOKENS = 342_000  # the 2,048-token BPE's training split of tinyshakespeare


def test_a_few_passes_over_shakespeare_get_the_small_model_and_dropout_02() -> None:
    sizing = size_run(SHAKESPEARE_TRAIN_TOKENS, TIMES, budget_s=300)
    assert sizing.model == "gpt2-tiny"  # 6 x 384 would see the corpus only 3.4 times
    assert sizing.steps == int(300 * OVERHEAD / 0.16)
    assert sizing.passes == pytest.approx(10.3, abs=0.1)
    assert sizing.dropout == 0.2  # issue 14: with 0.1, validation rose after ~8 passes


def test_a_large_corpus_gets_no_dropout() -> None:
    sizing = size_run(5_000_000, TIMES, budget_s=300)
    assert (sizing.model, sizing.dropout) == ("gpt2-tiny", 0.0)
    assert sizing.passes < 1


def test_a_few_passes_get_dropout_01() -> None:
    sizing = size_run(1_000_000, TIMES, budget_s=300)
    assert 1 < sizing.passes <= 4 and sizing.dropout == 0.1


def test_a_long_budget_buys_the_larger_model() -> None:
    sizing = size_run(SHAKESPEARE_TRAIN_TOKENS, TIMES, budget_s=30 * 60)
    assert sizing.model == "6x384"
    assert sizing.passes >= 6 and sizing.dropout == 0.2


def test_a_tiny_corpus_gets_the_small_model_for_fewer_steps() -> None:
    sizing = size_run(20_000, TIMES, budget_s=300)
    assert sizing.model == "gpt2-tiny"
    assert sizing.passes == pytest.approx(40, abs=0.2)  # capped: the rest would only memorize
    assert sizing.steps < 300 * OVERHEAD / 0.16
    assert "corpus 20,000 training tokens" in sizing.describe(20_000)


def test_an_empty_training_split_is_one_line() -> None:
    with pytest.raises(LmforgeError, match="training split holds no tokens"):
        size_run(0, TIMES, budget_s=300)
