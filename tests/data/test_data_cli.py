"""`lmforge tokenizer train` and `lmforge data prepare` end to end, and their error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.data.shards import TokenDataset, read_manifest
from lmforge.data.tokenizer import load_tokenizer


def test_train_then_prepare(text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    tokenizer_dir = tmp_path / "tok"
    argv = ["tokenizer", "train", "--kind", "bpe", "--vocab-size", "400", "--input",
            str(text_file), "--out", str(tokenizer_dir), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "400 tokens" in capsys.readouterr().out
    assert load_tokenizer(tokenizer_dir).vocab_size == 400
    data_dir = tmp_path / "data"
    argv = ["data", "prepare", "--input", str(text_file), "--tokenizer", str(tokenizer_dir),
            "--out", str(data_dir), "--split", "tail", "--val-fraction", "0.1",
            "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert str(data_dir) in capsys.readouterr().out
    assert read_manifest(data_dir)["options"]["split"] == "tail"
    val = TokenDataset(data_dir, "val")
    train = TokenDataset(data_dir, "train")
    assert 0.05 < val.num_bytes / (val.num_bytes + train.num_bytes) < 0.15  # the last ~10% of text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "prepare", "--input", "{tmp}/missing.txt", "--tokenizer", "{tmp}",
          "--out", "{tmp}/o"], "error: input {tmp}/missing.txt does not exist"),
        (["data", "prepare", "--input", "{text}", "--tokenizer", "{tmp}/none",
          "--out", "{tmp}/o"], "error: no tokenizer at {tmp}/none"),
        (["tokenizer", "train", "--kind", "bpe", "--vocab-size", "10", "--input", "{text}",
          "--out", "{tmp}/t"], "error: --vocab-size 10 is too small"),
        (["data", "prepare", "--input", "{text}", "--tokenizer", "{tmp}", "--out", "{text}"],
         "error: no tokenizer"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(argv, message, text_file, tmp_path, capsys):
    values = {"tmp": str(tmp_path), "text": str(text_file)}
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message.format(**values)) and "\n" not in err


def test_existing_different_output_dir_is_refused(text_file, bpe_dir, tmp_path, capsys):
    out = tmp_path / "data"
    base = ["data", "prepare", "--input", str(text_file), "--tokenizer", str(bpe_dir),
            "--out", str(out), "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(base + ["--val-fraction", "0.2"]) == 0
    assert main(base + ["--val-fraction", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and "\n" not in err
    assert main(base + ["--val-fraction", "0.5", "--overwrite"]) == 0


def test_python_m_lmforge_help_mentions_encoding_policy(capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    assert "U+FFFD" in capsys.readouterr().out
