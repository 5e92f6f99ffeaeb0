"""The run directory: layout, atomic writes, LATEST, the run-identity check, fine-tuning run files
and the token ids of model_config.json files written before it carried them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
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


# --- the lock, the identity check, leftovers and damaged files (issue 13) ---------------------

_HOLD_LOCK = """
import sys, time
from pathlib import Path
from lmforge.run_dir import lock_run_dir
lock_run_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def _locked_by_child(folder: Path) -> subprocess.Popen:
    """A child process (no torch: it starts fast) holding the lock of `folder`."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    child = _locked_by_child(tmp_path / "run")
    try:
        with pytest.raises(
            LmforgeError, match=rf"in use by another lmforge process \(pid {child.pid}\)"
        ):
            run_dir.lock_run_dir(tmp_path / "run")
    finally:
        child.kill()
        child.wait()


def test_kill_9_leaves_no_stale_lock(tmp_path: Path) -> None:
    child = _locked_by_child(tmp_path / "run")
    child.kill()  # SIGKILL: no cleanup code runs; the kernel drops the lock
    child.wait()
    assert (tmp_path / "run" / ".lock").read_text().strip() == str(child.pid)
    run_dir.lock_run_dir(tmp_path / "run")
    assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
    run_dir.lock_run_dir(tmp_path / "run")  # the holder may ask again (the Python API does)


def test_a_run_ended_in_a_process_that_goes_on_frees_its_lock(tmp_path: Path) -> None:
    run_dir.lock_run_dir(tmp_path / "run")
    run_dir.unlock_run_dir(tmp_path / "run")  # what api.pretrain and finetune do at the end
    child = _locked_by_child(tmp_path / "run")  # another process can continue the run
    child.kill()
    child.wait()


def test_no_lock_is_left_in_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LmforgeError, match="is not an lmforge run directory"):
        run_dir.lock_run_dir(tmp_path)
    assert not (tmp_path / ".lock").exists()


def test_finetuning_locks_its_new_run_dir(tmp_path: Path) -> None:
    child = _locked_by_child(tmp_path / "run")
    try:
        run_dir.check_new_run_dir(tmp_path / "run")  # the lock file alone is not a run
        with pytest.raises(LmforgeError, match=rf"pid {child.pid}"):
            _write_finetune_run(tmp_path)
    finally:
        child.kill()
        child.wait()


def _write_finetune_run(root: Path) -> None:
    (root / "pretrained").mkdir(exist_ok=True)
    (root / "pretrained" / "tokenizer.json").write_text("{}")
    config = load_finetune_config(
        "classify", str(root / "pretrained"), [f"--run.dir={root / 'run'}", "--data.train=t.txt"]
    )
    run_dir.write_finetune_run_files(
        config, task_name="classify", metric="accuracy", task_state={},
        tokenizer_source=root / "pretrained",
    )  # fmt: skip


def _prepared_data(folder: Path, tokenizer: str = "tokenizer A", num_tokens: int = 100) -> Path:
    """A data directory as far as the identity check reads it: tokenizer.json and manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(tokenizer)
    manifest = {
        "tokenizer_sha256": hashlib.sha256(tokenizer.encode()).hexdigest(),
        "inputs": ["corpus.txt"], "options": {"split": "auto"},
        "splits": {"train": {"num_tokens": num_tokens}, "val": {"num_tokens": 10}},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _started_run(root: Path, data: Path, *overrides: str):
    """A run directory as `lmforge pretrain` leaves it after its first checkpoint."""
    config = load_run_config("gpt2-tiny", [f"--run.dir={root}", f"--data.path={data}", *overrides])
    run_dir.write_run_files(config, data)
    _complete_checkpoint(root, 10)
    return config


def test_resume_from_a_path_gets_the_identity_check(tmp_path: Path) -> None:
    data = _prepared_data(tmp_path / "data")
    _started_run(tmp_path / "run", data)
    step = str(tmp_path / "run" / "checkpoints" / "step-0000010")
    other = load_run_config(
        "bloom-tiny", [f"--run.dir={tmp_path / 'run'}", f"--data.path={data}", f"--resume={step}"]
    )
    with pytest.raises(LmforgeError, match=r"run holds a different run \(model\."):
        run_dir.check_run_dir(other)
    # The same checkpoint continued into a new folder: still the other run's identity.
    moved = dataclasses.replace(other, run=dataclasses.replace(other.run, dir=str(tmp_path / "b")))
    with pytest.raises(LmforgeError, match=r"step-0000010 belongs to a different run \(model\."):
        run_dir.check_run_dir(moved)


def test_a_different_tokenizer_is_refused_and_never_copied(tmp_path: Path) -> None:
    config = _started_run(tmp_path / "run", _prepared_data(tmp_path / "data"))
    _prepared_data(tmp_path / "data", tokenizer="tokenizer B")  # re-prepared, same size
    with pytest.raises(LmforgeError, match=r"tokenized with another tokenizer than .*run/tokeni"):
        run_dir.check_run_dir(config)
    assert (tmp_path / "run" / "tokenizer.json").read_text() == "tokenizer A"


def test_a_tokenizer_json_replaced_in_the_data_dir_is_refused(tmp_path: Path) -> None:
    config = _started_run(tmp_path / "run", _prepared_data(tmp_path / "data"))
    (tmp_path / "data" / "tokenizer.json").write_text("tokenizer B")  # the manifest says A
    with pytest.raises(LmforgeError, match=r"tokenized with another tokenizer than"):
        run_dir.check_run_dir(config)


def test_init_from_a_checkpoint_of_another_tokenizer_is_refused(tmp_path: Path) -> None:
    _started_run(tmp_path / "first", _prepared_data(tmp_path / "data"))
    config = load_run_config(
        "gpt2-tiny",
        [f"--run.dir={tmp_path / 'second'}", f"--data.path={tmp_path / 'other'}",
         f"--init_from={tmp_path / 'first'}"],
    )  # fmt: skip
    _prepared_data(tmp_path / "other", tokenizer="tokenizer B")
    with pytest.raises(LmforgeError, match="tokenized with another tokenizer than .*first"):
        run_dir.check_run_dir(config)


def test_data_re_prepared_with_other_content_is_refused(tmp_path: Path) -> None:
    config = _started_run(tmp_path / "run", _prepared_data(tmp_path / "data"))
    _prepared_data(tmp_path / "data", num_tokens=120)
    with pytest.raises(LmforgeError, match=r"prepared again .*num_tokens.train: 100 there, 120"):
        run_dir.check_run_dir(config)


def test_relative_and_absolute_data_paths_are_one_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _started_run(Path("run"), _prepared_data(Path("data")))
    config = load_run_config(
        "gpt2-tiny", [f"--run.dir={tmp_path / 'run'}", f"--data.path={tmp_path / 'data'}"]
    )
    assert run_dir.check_run_dir(config) == tmp_path / "run" / "checkpoints" / "step-0000010"
    elsewhere = _prepared_data(tmp_path / "copy")
    moved = dataclasses.replace(config, data=dataclasses.replace(config.data, path=str(elsewhere)))
    with pytest.raises(LmforgeError, match=r"different run \(data.path: '.*/data' there"):
        run_dir.check_run_dir(moved)


def test_a_run_of_an_older_version_resumes_and_gets_data_json(tmp_path: Path) -> None:
    data = _prepared_data(tmp_path / "data")
    config = _started_run(tmp_path / "run", data)
    (tmp_path / "run" / "data.json").unlink()  # older versions wrote none
    assert run_dir.check_run_dir(config) is not None
    run_dir.write_run_files(config, data)
    assert json.loads((tmp_path / "run" / "data.json").read_text())["num_tokens"]["train"] == 100


def test_config_yaml_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    data = _prepared_data(tmp_path / "data")
    config = _started_run(tmp_path / "run", data)
    saved = tmp_path / "run" / "config.yaml"
    inode = saved.stat().st_ino  # an atomic rewrite replaces the file, hence a new inode
    run_dir.write_run_files(config, data)
    assert saved.stat().st_ino == inode
    longer = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=77))
    run_dir.write_run_files(longer, data)
    assert saved.stat().st_ino != inode and "max_steps: 77" in saved.read_text()


def test_leftovers_of_a_crash_are_cleared(tmp_path: Path) -> None:
    _complete_checkpoint(tmp_path, 10)
    checkpoints = tmp_path / "checkpoints"
    run_dir.staging_dir(run_dir.checkpoint_dir(tmp_path, 20))
    (tmp_path / "config.yaml.tmp").write_text("half")
    (checkpoints / "LATEST.tmp").write_text("half")
    # Caught between the two renames of publish_checkpoint: the old step-10 is put back.
    os.replace(checkpoints / "step-0000010", checkpoints / "step-0000010.old")
    _complete_checkpoint(tmp_path, 5)
    os.replace(checkpoints / "step-0000005", checkpoints / "step-0000005.old")
    _complete_checkpoint(tmp_path, 5)  # ...while this one was replaced completely
    run_dir.remove_leftovers(tmp_path)
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "LATEST", "step-0000005", "step-0000010",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


def test_a_run_without_checkpoint_starts_clean(tmp_path: Path) -> None:
    for name in ("metrics.jsonl", "curves.png", "tensorboard/events.out"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("rows of steps 1-6")
    (tmp_path / "config.yaml").write_text("kept")
    run_dir.start_clean(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "must be a mapping"),
        (b"model:\n  family: decoder\n", "KeyError"),  # cut short
        (b"model: [1", "cannot read"),
        (b"\xff\xfe\x00binary", "cannot read"),
    ],
)
def test_damaged_config_yaml_is_one_line(tmp_path: Path, text: bytes, reason: str) -> None:
    (tmp_path / "config.yaml").write_bytes(text)
    with pytest.raises(
        LmforgeError, match=rf"config.yaml is empty or damaged \(.*{reason}.*\); restore"
    ) as caught:
        run_dir.check_run_dir(_run_config(tmp_path))
    assert "\n" not in str(caught.value)


def test_garbage_latest_is_one_line(tmp_path: Path) -> None:
    config = _started_run(tmp_path, _prepared_data(tmp_path.parent / f"{tmp_path.name}-data"))
    (tmp_path / "checkpoints" / "LATEST").write_bytes(b"\xff\x00garbage")
    with pytest.raises(LmforgeError, match="LATEST names checkpoint .*fix LATEST or delete it"):
        run_dir.check_run_dir(config)
    (tmp_path / "checkpoints" / "LATEST").unlink()  # as the message says: the newest is used
    assert run_dir.check_run_dir(config) == tmp_path / "checkpoints" / "step-0000010"


@pytest.mark.parametrize(("content", "problem"), [(None, "is missing"), ("{", "is damaged")])
def test_checkpoint_without_a_readable_trainer_state_is_one_line(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    config = _started_run(tmp_path, _prepared_data(tmp_path.parent / f"{tmp_path.name}-data"))
    state = tmp_path / "checkpoints" / "step-0000010" / "trainer_state.json"
    state.unlink() if content is None else state.write_text(content)
    with pytest.raises(
        LmforgeError, match=rf"trainer_state.json {problem}.*; delete .*step-0000010"
    ):
        run_dir.check_run_dir(config)


def test_a_checkpoint_caught_being_replaced_is_resumed(tmp_path: Path) -> None:
    config = _started_run(tmp_path, _prepared_data(tmp_path.parent / f"{tmp_path.name}-data"))
    step = tmp_path / "checkpoints" / "step-0000010"  # LATEST names it
    os.replace(step, step.with_name(step.name + ".old"))  # publish_checkpoint's first rename
    run_dir.staging_dir(step)  # the new copy, complete but not yet renamed
    with pytest.raises(LmforgeError, match="names checkpoint 'step-0000010', which does not"):
        run_dir.check_run_dir(config)
    run_dir.remove_leftovers(tmp_path)  # what `lmforge pretrain` does first, holding the lock
    assert run_dir.check_run_dir(config) == step


def test_an_unwritable_run_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(LmforgeError, match=r"cannot create .*file/run \(.*\); choose a --run.dir"):
        run_dir.lock_run_dir(tmp_path / "file" / "run")
