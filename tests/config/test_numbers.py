"""Numbers that cannot train (inf, NaN, negative, out of range) are refused when the config is
read, in one line naming the key and the accepted range."""

from __future__ import annotations

import pytest

from lmforge.cli.main import main
from lmforge.config.finetune import load_finetune_config
from lmforge.config.loading import load_run_config
from lmforge.errors import LmforgeError

REQUIRED = ["--run.dir=r", "--data.path=d"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=inf", "train.lr must be a finite number > 0 (e.g. 3e-4), got inf"),
        ("train.lr=nan", "train.lr must be a finite number > 0 (e.g. 3e-4), got nan"),
        ("train.lr=0", "train.lr must be a finite number > 0 (e.g. 3e-4), got 0.0"),
        ("train.warmup_steps=-1", "train.warmup_steps must be >= 0, got -1"),
        ("train.grad_clip=nan", "train.grad_clip must be a number >= 0 (0: no clipping), got nan"),
        ("train.grad_clip=-1", "train.grad_clip must be a number >= 0 (0: no clipping), got -1.0"),
        ("train.weight_decay=nan", "train.weight_decay must be a number >= 0, got nan"),
        ("train.beta1=1", "train.beta1 must be in [0, 1), got 1.0"),
        ("train.beta2=-0.1", "train.beta2 must be in [0, 1), got -0.1"),
        ("train.min_lr_ratio=nan", "train.min_lr_ratio must be in [0, 1], got nan"),
        ("train.max_steps=0", "train.max_steps must be > 0, got 0"),
        ("train.max_bad_steps=0", "train.max_bad_steps must be >= 1, got 0"),
        ("train.spike_factor=0.5", "train.spike_factor must be 0 (no spike test) or a number > 1"),
        ("train.rollback_lr_factor=0", "train.rollback_lr_factor must be in (0, 1], got 0.0"),
        ("model.dropout=1", "model.dropout must be in [0, 1), got 1.0"),
        ("model.dropout=nan", "model.dropout must be in [0, 1), got nan"),
        ("objective.poisson_lambda=inf", "objective.poisson_lambda must be > 0, got inf"),
        ("eval.every=-1", "eval.every must be >= 0, got -1"),
        ("checkpoint.keep_last=-2", "checkpoint.keep_last must be >= 0, got -2"),
        ("log.every=-1", "log.every must be >= 0, got -1"),
    ],
)
def test_pretraining_numbers_are_refused_naming_key_and_range(override: str, message: str) -> None:
    with pytest.raises(LmforgeError) as error:
        load_run_config("gpt2-tiny", [*REQUIRED, f"--{override}"])
    assert str(error.value) == message or str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=inf", "train.lr must be a finite number > 0 (e.g. 3e-4), got inf"),
        ("train.epochs=inf", "train.epochs must be a finite number > 0, got inf"),
        ("train.warmup_ratio=nan", "train.warmup_ratio must be in [0, 1), got nan"),
        ("train.dropout=nan", "train.dropout must be in [0, 1), got nan"),
        ("train.beta2=1", "train.beta2 must be in [0, 1), got 1.0"),
        ("train.max_bad_steps=0", "train.max_bad_steps must be >= 1, got 0"),
        ("eval.batch_size=0", "eval.batch_size must be > 0, got 0"),
        ("eval.patience=-1", "eval.patience must be >= 0, got -1"),
    ],
)
def test_finetuning_numbers_are_refused_naming_key_and_range(override: str, message: str) -> None:
    with pytest.raises(LmforgeError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace(".", r"\.")):  # fmt: skip
        load_finetune_config("classify", "pre", [f"--{override}", "--run.dir=r", "--data.train=t"])


def test_the_command_line_says_it_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["pretrain", "gpt2-tiny", *REQUIRED, "--train.lr=inf"]) == 2
    assert capsys.readouterr().err == (
        "error: train.lr must be a finite number > 0 (e.g. 3e-4), got inf\n"
    )


def test_sensible_numbers_pass() -> None:
    config = load_run_config("gpt2-tiny", [*REQUIRED, "--train.spike_factor=0", "--train.lr=10"])
    assert config.train.spike_factor == 0 and config.train.lr == 10  # lr=10 is warned at start
