"""Bad input: one clear line on stderr, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from tests.conftest import TINY_MODEL


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def pretrain(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["pretrain", "gpt2-tiny", f"--data.path={data}", f"--run.dir={run_dir}", *TINY_MODEL,
            "--train.max_steps=2", "--train.batch_size=2", "--eval.every=0", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train.lrr=1"], "unknown config key train.lrr; valid keys under train: max_steps"),
        (["--train.lr=fast"], "train.lr expects float, got 'fast'"),
        (["--train.precision=fp8"], "choose one of fp32, bf16, fp16"),
        (["--train.seq_len=4096"], "train.seq_len=4096 exceeds the model's learned positions"),
        (["--model.vocab_size=64"], "raise --model.vocab_size to at least 512"),
        (["--train.batch_size=3", "--train.micro_batch_size=2"], "train.batch_size"),
    ],
)
def test_bad_pretrain_settings_give_one_line(
    python_docs_data: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    code, line = run_cli(pretrain(python_docs_data, tmp_path / "run", *extra), capsys)
    assert code == 2
    assert line.startswith("error: ") and message in line


def test_missing_data_dir_is_named(tmp_path: Path, capsys) -> None:
    code, line = run_cli(pretrain(tmp_path / "nowhere", tmp_path / "run"), capsys)
    assert code == 2 and "nowhere" in line


def test_run_dir_holding_a_different_run_is_refused(python_docs_data: Path, tmp_path: Path, capsys):
    assert main(pretrain(python_docs_data, tmp_path / "run")) == 0
    code, line = run_cli(pretrain(python_docs_data, tmp_path / "run", "--model.d_model=64"), capsys)
    assert code == 2
    assert "holds a different run (model.d_model: 32 there, 64 now)" in line


def test_checkpoint_of_another_shape_is_refused(python_docs_data: Path, tmp_path: Path, capsys):
    assert main(pretrain(python_docs_data, tmp_path / "a")) == 0
    resume = f"--resume={tmp_path / 'a'}"
    code, line = run_cli(
        pretrain(python_docs_data, tmp_path / "b", "--model.d_ff=128", resume), capsys
    )
    assert code == 2
    assert "belongs to a different run (model.d_ff: 64 there, 128 now)" in line


def test_truncated_checkpoint_is_refused(python_docs_data: Path, tmp_path: Path, capsys):
    assert main(pretrain(python_docs_data, tmp_path / "a")) == 0
    weights = next((tmp_path / "a" / "checkpoints").glob("step-*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, line = run_cli(pretrain(python_docs_data, tmp_path / "a", "--train.max_steps=4"), capsys)
    assert code == 2
    assert "truncated or corrupt" in line


def test_generate_without_checkpoint_is_refused(tmp_path: Path, capsys) -> None:
    code, line = run_cli(["generate", str(tmp_path), "--prompt", "hi"], capsys)
    assert code == 2 and "no checkpoint" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--objective.kind=span_corruption", "--train.precision=fp16"], "overflow in fp16; use"),
        # A model type without a default objective (a custom encoder-decoder) must name one.
        (
            ["--model.default_objective=none"],
            "encoder_decoder models have no default objective; add --objective.kind=",
        ),  # fmt: skip
        (["--objective.kind=clm"], "objective clm cannot train encoder_decoder models"),
        (
            ["--objective.kind=bart_denoising", "--train.batch_size=8192"],
            "sequences of train.seq_len=32 (30 tokens of text each), too few for one evaluation",
        ),
    ],
)
def test_bad_encoder_decoder_settings_give_one_line(
    python_docs_data: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    argv = ["pretrain", "t5-tiny", f"--data.path={python_docs_data}", f"--run.dir={tmp_path / 'r'}",
            *TINY_MODEL, *extra]  # fmt: skip
    code, line = run_cli(argv, capsys)
    assert code == 2
    assert line.startswith("error: ") and message in line


_BAD_DECODING = {
    "--num-beams 0": (["--num-beams", "0"], "--num-beams must be at least 1, got 0"),
    "--num-beams -2": (["--num-beams", "-2"], "--num-beams must be at least 1, got -2"),
    "--max-new-tokens 0": (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    "--max-new-tokens -3": (["--max-new-tokens", "-3"], "--max-new-tokens must be at least 1"),
    "--temperature -1": (["--temperature", "-1"], "--temperature must be >= 0"),
    "--temperature nan": (["--temperature", "nan"], "--temperature must be a finite number"),
    "--temperature inf": (["--temperature", "inf"], "--temperature must be a finite number"),
    "--top-p 0": (["--top-p", "0"], "--top-p must be in (0, 1]"),
    "--top-p 1.5": (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    "--top-p nan": (["--top-p", "nan"], "--top-p must be a finite number"),
    "--top-k -1": (["--top-k", "-1"], "--top-k must be >= 0"),
    "--num-samples 0": (["--num-samples", "0"], "--num-samples must be at least 1"),
    "--length-penalty nan": (["--num-beams", "3", "--length-penalty", "nan"],
                             "--length-penalty must be a finite number"),
    "--no-repeat-ngram-size -1": (["--no-repeat-ngram-size", "-1"],
                                  "--no-repeat-ngram-size must be >= 0"),
}  # fmt: skip


@pytest.mark.parametrize("preset", ["gpt2-tiny", "bloom-tiny", "t5-tiny", "bart-tiny", "bert-tiny"])
@pytest.mark.parametrize(("flags", "message"), _BAD_DECODING.values(), ids=_BAD_DECODING.keys())
def test_nonsense_decoding_settings_give_one_line(
    tiny_pretrained, capsys, preset: str, flags: list[str], message: str
) -> None:
    code = main(["generate", str(tiny_pretrained(preset)), "--prompt", "def", *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: ") and message in lines[0]
