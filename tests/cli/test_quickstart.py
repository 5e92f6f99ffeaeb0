"""The quickstart: one command from raw text to a trained model and a sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.data.sources import iter_documents


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
    assert "[4/4] sampling" in printed
    assert "bits per byte" in printed
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 10  # the minimum when the budget is smaller than ten steps
    assert "val_bpb" in rows[-1]
    assert (out / "run" / "curves.png").is_file()
    # A second quickstart into the same folder is refused instead of mixing runs.
    assert main(args) == 2
