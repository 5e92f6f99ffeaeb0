"""`lmforge pretrain RUN_OR_CHECKPOINT`: continued pretraining starts from the saved weights."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lmforge.cli.main import main
from tests.conftest import TINY_MODEL


def last_eval(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "val_loss" in row][-1]


def test_pretraining_from_a_run_starts_from_its_weights(python_docs_data: Path, tmp_path: Path):
    common = [f"--data.path={python_docs_data}", "--train.batch_size=2", "--train.warmup_steps=0"]
    first = tmp_path / "first"
    assert main(["pretrain", "gpt2-tiny", f"--run.dir={first}", "--train.max_steps=6",
                 *TINY_MODEL, *common]) == 0  # fmt: skip
    # One step at a negligible learning rate: the model must still be the first run's.
    second = tmp_path / "second"
    assert main(["pretrain", str(first), f"--run.dir={second}", "--train.max_steps=1",
                 "--train.lr=1e-12", "--log.progress=false", "--log.tensorboard=false",
                 "--train.seq_len=32", *common]) == 0  # fmt: skip
    assert abs(last_eval(second)["val_loss"] - last_eval(first)["val_loss"]) < 1e-5
    saved = yaml.safe_load((second / "config.yaml").read_text())
    assert saved["init_from"] == str(first)
    assert saved["model"]["d_model"] == 32  # the model settings come from the first run
