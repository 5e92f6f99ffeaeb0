"""The run directory: layout, atomic writes, LATEST, the run-identity check, fine-tuning run files
and the token ids of model_config.json files written before it carried them."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lmforge import run_dir
from lmforge.config.finetune import load_finetune_config
from lmforge.config.loading import load_run_config, to_dict
from lmforge.config.model import TokenIdsConfig
from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError

T5_TOKENIZER = SimpleNamespace(pad_id=0, bos_id=None, eos_id=1)
"""Role ids of a unigram (T5-style) vocabulary: no <s>."""
BART_TOKENIZER = SimpleNamespace(pad_id=1, bos_id=0, eos_id=2)
"""Role ids of a byte-level BPE (BART-style) vocabulary: <s> <pad> </s>."""


def _complete_checkpoint(root: Path, step: int, model_config: dict | None = None) -> Path:
    """A step directory as `save_checkpoint` leaves it, without the tensors' contents."""
    final = run_dir.checkpoint_dir(root, step)
    staging = run_dir.staging_dir(final)
    (staging / run_dir.MODEL_FILE).write_bytes(b"")
    (staging / run_dir.OPTIMIZER_FILE).write_bytes(b"")
    run_dir.write_json(staging / run_dir.TRAINER_STATE_FILE, {"step": step})
    run_dir.write_json(staging / run_dir.MODEL_CONFIG_FILE, model_config or {})
    run_dir.publish_checkpoint(staging, final)
    return final


def _run_config(root: Path, *overrides: str):
    return load_run_config("gpt2-tiny", [f"--run.dir={root}", "--data.path=data", *overrides])


def test_module_imports_no_torch() -> None:
    code = "import sys, lmforge.run_dir; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_checkpoints_live_in_numbered_step_dirs(tmp_path: Path) -> None:
    assert run_dir.checkpoint_dir(tmp_path, 100) == tmp_path / "checkpoints" / "step-0000100"
    for step in (20, 3, 100):
        _complete_checkpoint(tmp_path, step)
    checkpoints = tmp_path / "checkpoints"
    assert [p.name for p in run_dir.step_dirs(checkpoints)] == [
        "step-0000003", "step-0000020", "step-0000100",
    ]  # fmt: skip
    assert (checkpoints / "LATEST").read_text() == "step-0000100\n"


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.json"
    run_dir.write_json(path, {"accuracy": 1})

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(run_dir.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        run_dir.write_json(path, {"accuracy": 2})
    assert json.loads(path.read_text()) == {"accuracy": 1}


def test_unserialisable_rows_leave_no_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    with pytest.raises(TypeError):
        run_dir.write_jsonl(path, [{"ok": 1}, {"bad": object()}])
    assert list(tmp_path.iterdir()) == []


def test_unfinished_checkpoint_is_ignored(tmp_path: Path) -> None:
    done = _complete_checkpoint(tmp_path, 10)
    crashed = run_dir.staging_dir(run_dir.checkpoint_dir(tmp_path, 20))
    (crashed / run_dir.MODEL_FILE).write_bytes(b"")
    checkpoints = tmp_path / "checkpoints"
    assert run_dir.step_dirs(checkpoints) == [done]
    assert run_dir.staging_dirs(checkpoints) == [crashed]
    for path in (tmp_path, checkpoints, done):
        assert run_dir.resolve_checkpoint(path) == done


def test_latest_naming_a_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "LATEST").write_text("step-0000099\n")
    with pytest.raises(LmforgeError, match="names checkpoint 'step-0000099', which does not exist"):
        run_dir.resolve_checkpoint(tmp_path)


def test_fresh_run_dir_starts_from_scratch(tmp_path: Path) -> None:
    assert run_dir.check_run_dir(_run_config(tmp_path / "new")) is None


def test_identity_check_messages(tmp_path: Path) -> None:
    config = _run_config(tmp_path)
    run_dir.write_run_files(config, tmp_path / "no-tokenizer-here")
    with pytest.raises(
        LmforgeError, match=r"holds a different run \(model.d_model: 256 there, 48 now"
    ):
        run_dir.check_run_dir(_run_config(tmp_path, "--model.d_model=48"))
    with pytest.raises(LmforgeError, match="already holds a run; choose another --run.dir, or"):
        run_dir.check_run_dir(_run_config(tmp_path, "--resume=never"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(LmforgeError, match="exists and is not an lmforge run directory"):
        run_dir.check_run_dir(_run_config(tmp_path / "other"))


def test_config_of_an_older_version_without_token_ids_is_the_same_run(tmp_path: Path) -> None:
    old = to_dict(_run_config(tmp_path))
    del old["model"]["tokens"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    config = _run_config(tmp_path)
    tokens = TokenIdsConfig(pad_id=1, bos_id=0, eos_id=2)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, tokens=tokens))
    latest = _complete_checkpoint(tmp_path, 5)
    assert run_dir.check_run_dir(config) == latest


def test_continued_pretraining_takes_the_checkpoint_model(tmp_path: Path) -> None:
    model = to_dict(dataclasses.replace(get_preset("bart-tiny"), d_model=48))
    _complete_checkpoint(tmp_path / "run", 3, model)
    config = run_dir.load_pretraining_config(
        str(tmp_path / "run"), ["--run.dir=b", "--data.path=d"]
    )
    assert config.model.d_model == 48 and config.init_from == str(tmp_path / "run")


def test_finetuning_run_files_round_trip(tmp_path: Path) -> None:
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "tokenizer.json").write_text("{}")
    config = load_finetune_config(
        "classify", str(tmp_path / "pretrained"),
        [f"--run.dir={tmp_path / 'run'}", "--data.train=train.txt"],
    )  # fmt: skip
    run_dir.write_finetune_run_files(
        config, task_name="classify", metric="accuracy", task_state={"labels": ["a", "b"]},
        tokenizer_source=tmp_path / "pretrained",
    )  # fmt: skip
    info = run_dir.read_task_info(tmp_path / "run")
    assert info["task"] == "classify" and info["labels"] == ["a", "b"]
    assert info["pretrained"] == str(tmp_path / "pretrained") and "text_fields" in info["options"]
    assert (tmp_path / "run" / "tokenizer.json").read_text() == "{}"
    with pytest.raises(LmforgeError, match="already exists and is not empty; pass a new --run.dir"):
        run_dir.check_new_run_dir(tmp_path / "run")
    with pytest.raises(LmforgeError, match="is not a fine-tuning run"):
        run_dir.read_task_info(tmp_path / "pretrained")


@pytest.mark.parametrize(
    ("preset", "objective", "tokenizer", "start"),
    [
        ("t5-tiny", "span_corruption", T5_TOKENIZER, 0),  # <pad>
        ("bart-tiny", "bart_denoising", BART_TOKENIZER, 2),  # </s>
        ("t5-tiny", None, T5_TOKENIZER, 0),  # converted: no <s>, T5-style
        ("bart-tiny", None, BART_TOKENIZER, 2),  # converted: <s>, BART-style
        ("t5-tiny", "bart_denoising", T5_TOKENIZER, 1),  # the objective decides
    ],
)
def test_old_model_config_gets_token_ids_as_generation_guessed_them(
    tmp_path: Path, preset: str, objective: str | None, tokenizer, start: int
) -> None:
    values = to_dict(get_preset(preset))
    del values["tokens"]  # model_config.json as older versions wrote it
    checkpoint = _complete_checkpoint(tmp_path, 7, values)
    if objective is not None:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"objective": {"kind": objective}}))
    config = run_dir.read_model_config(checkpoint, tokenizer)
    expected = TokenIdsConfig(
        pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
        decoder_start_id=start,
    )  # fmt: skip
    assert config.tokens == expected


def test_stored_token_ids_are_never_replaced(tmp_path: Path) -> None:
    stored = TokenIdsConfig(pad_id=5, eos_id=6, decoder_start_id=7)
    checkpoint = _complete_checkpoint(
        tmp_path, 1, to_dict(dataclasses.replace(get_preset("bart-tiny"), tokens=stored))
    )
    assert run_dir.read_model_config(checkpoint, BART_TOKENIZER).tokens == stored


def test_decoder_only_models_have_no_decoder_start() -> None:
    assert run_dir.token_ids(BART_TOKENIZER, "decoder", "clm").decoder_start_id is None


def test_token_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(LmforgeError, match=r"model.tokens.eos_id \(5000\) must be < model.vocab"):
        dataclasses.replace(get_preset("gpt2-tiny"), tokens=TokenIdsConfig(eos_id=5000))
    with pytest.raises(LmforgeError, match="decoder_start_id is only valid for family encoder_dec"):
        dataclasses.replace(get_preset("gpt2-tiny"), tokens=TokenIdsConfig(decoder_start_id=0))
