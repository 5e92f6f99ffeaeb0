"""The run directory: the one module that knows where each file of a run lies, and writes them.

A pretraining run (`lmforge pretrain`; `convert --from-hf` writes its tokenizer and checkpoint)::

    RUN_DIR/config.yaml                      the resolved RunConfig; its identity keys name the run
    RUN_DIR/tokenizer.json, special_tokens.json    copied from the data directory
    RUN_DIR/metrics.jsonl, tensorboard/, curves.png
    RUN_DIR/checkpoints/step-0000100/        model.safetensors, optimizer.pt, trainer_state.json,
                                             model_config.json (the ModelConfig as a dict)
    RUN_DIR/checkpoints/LATEST               "step-0000100", the newest complete checkpoint

A fine-tuning run (`lmforge finetune`) holds config.yaml (a FinetuneConfig), task.json (task,
pretrained source, metric, task options and the task's state, e.g. its labels), the tokenizer,
metrics.jsonl, metrics.json (the results), predictions.jsonl, test_predictions.jsonl, curves.png and
its best checkpoint.

Files are written atomically: each into a temporary file beside it, fsynced, then renamed into
place (`os.replace`), so a crash never leaves a half-written file under the real name
(metrics.jsonl grows by whole lines, training/metrics.py). A checkpoint is assembled in
`step-0000100.tmp`, renamed, and only then named by `LATEST`; readers ignore `.tmp` directories.
`model_config.json` carries the special token ids generation needs (`tokens`); for checkpoints
written before it did, `read_model_config` fills them in. Imports no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from lmforge.config.finetune import FinetuneConfig
from lmforge.config.loading import (
    load_run_config,
    model_config_from_dict,
    read_yaml,
    run_config_from_tree,
    to_dict,
    yaml_text,
)
from lmforge.config.model import ModelConfig, TokenIdsConfig
from lmforge.config.schema import RunConfig
from lmforge.errors import LmforgeError

CONFIG_FILE = "config.yaml"
TOKENIZER_FILES = ("tokenizer.json", "special_tokens.json")
"""The tokenizer's files (`data.tokenizer.Tokenizer.save` writes them); the first is required."""
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CURVES_FILE = "curves.png"
TASK_FILE = "task.json"
RESULTS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
TEST_PREDICTIONS_FILE = "test_predictions.jsonl"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "LATEST"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_STATE_FILE = "trainer_state.json"
MODEL_CONFIG_FILE = "model_config.json"
SHARDED_DIR = "sharded"
"""A sharded (FSDP) checkpoint's model and optimizer state, one file per rank plus an index
(torch.distributed.checkpoint, `distributed/checkpointing.py`); model.safetensors is then written
only by consolidation (the last checkpoint of a run, or `lmforge convert --consolidate`)."""
_SHARDED_INDEX = ".metadata"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_STAGING_SUFFIX = ".tmp"

# Settings that define what a pretraining run directory holds; a different value means a
# different run.
_IDENTITY_KEYS = ("model", "objective", ("data", "path"), ("train", "seq_len"), ("run", "seed"))


class TokenizerRoles(Protocol):
    """The role ids of a `data.tokenizer.Tokenizer` (not imported: this module stays light)."""

    pad_id: int | None
    bos_id: int | None
    eos_id: int | None


# --- atomic writes ----------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a fsynced temporary file renamed into place (never a half file)."""
    tmp = path.with_name(path.name + _STAGING_SUFFIX)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, value: Any, *, indent: int = 2) -> None:
    write_text(path, json.dumps(value, indent=indent) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames); not possible on every OS, hence best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of `step` lies once complete."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:07d}"


def staging_dir(final: Path) -> Path:
    """A new, empty directory to assemble the checkpoint `final` in (left from a crash: emptied)."""
    tmp = final.with_name(final.name + _STAGING_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish_checkpoint(staging: Path, final: Path) -> None:
    """Rename the assembled `staging` to `final` (replacing a checkpoint of the same step), then
    point `LATEST` at it: a crash at any point leaves LATEST naming a complete checkpoint."""
    _fsync_dir(staging)
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    write_text(final.parent / LATEST_FILE, final.name + "\n")
    _fsync_dir(final.parent)


def step_dirs(checkpoints: Path) -> list[Path]:
    """The complete step-* directories of a checkpoints directory, oldest first."""
    steps = sorted(
        (int(match.group(1)), path)
        for path in checkpoints.iterdir()
        if path.is_dir() and (match := _STEP_DIR.match(path.name))
    )
    return [path for _, path in steps]


def staging_dirs(checkpoints: Path) -> list[Path]:
    """Directories of checkpoints whose writing never finished."""
    return [path for path in checkpoints.glob(f"step-*{_STAGING_SUFFIX}") if path.is_dir()]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint `RUN_DIR/checkpoints/LATEST` names, or None when there is none yet."""
    return _read_latest(Path(run_dir) / CHECKPOINTS_DIR)


def _read_latest(checkpoints: Path) -> Path | None:
    latest = checkpoints / LATEST_FILE
    if not latest.is_file():
        return None
    name = latest.read_text(encoding="utf-8").strip()
    path = checkpoints / name
    if not name or not is_checkpoint(path):
        raise LmforgeError(
            f"{latest} names checkpoint {name!r}, which does not exist or is incomplete; "
            "point --resume at an existing step-* directory or fix LATEST"
        )
    return path


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Turn a run dir, its `checkpoints/` dir or a `step-*` dir into a checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"no checkpoint at {path}: the path does not exist")
    if is_checkpoint(path):
        return path
    for checkpoints in (path, path / CHECKPOINTS_DIR):
        if (checkpoints / LATEST_FILE).is_file():
            latest = _read_latest(checkpoints)
            assert latest is not None
            return latest
    raise LmforgeError(
        f"no checkpoint at {path}: expected a run dir with checkpoints/LATEST, "
        f"a checkpoints dir, or a step-* dir holding {MODEL_FILE}"
    )


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is a complete checkpoint: whole weights, or a sharded save's index."""
    return (path / MODEL_FILE).is_file() or (path / SHARDED_DIR / _SHARDED_INDEX).is_file()


def _run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent  # RUN_DIR/checkpoints/step-N


# --- model configuration and tokenizer --------------------------------------------------------


def read_model_config_dict(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's model_config.json as saved."""
    config_file = checkpoint / MODEL_CONFIG_FILE
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LmforgeError(f"cannot read {config_file}: {error}") from None


def read_model_config(checkpoint: Path, tokenizer: TokenizerRoles | None = None) -> ModelConfig:
    """The ModelConfig of a checkpoint directory. Checkpoints written before model_config.json
    carried `tokens` get them from `tokenizer` (the one beside the checkpoint) and the run's
    pretraining objective, as generation used to guess them."""
    values = read_model_config_dict(checkpoint)
    config = model_config_from_dict(values)
    if "tokens" in values or tokenizer is None:
        return config
    # Filled once, here, so that generation and the tasks read stored ids and never guess.
    return fill_token_ids(config, tokenizer, _pretraining_objective(_run_dir_of(checkpoint)))


def _pretraining_objective(run_dir: Path) -> str | None:
    """objective.kind of the run's config.yaml; None without one (converted checkpoints) or in
    fine-tuning runs, whose config names no objective."""
    try:
        objective = read_yaml(run_dir / CONFIG_FILE).get("objective")
    except LmforgeError:
        return None
    return objective.get("kind") if isinstance(objective, dict) else None


def token_ids(tokenizer: TokenizerRoles, family: str, objective_kind: str | None) -> TokenIdsConfig:
    """The special ids of a model trained on `tokenizer`: its pad/bos/eos roles and, for
    encoder-decoders, the decoder start of the pretraining objective (objectives/): <pad> after
    span corruption (T5), </s> after BART denoising. With no objective known (converted checkpoints,
    runs of older versions) a tokenizer with a bos token is taken to be BART-style: byte-level BPE
    has <s>, T5's unigram vocabulary has not."""
    start = None
    if family == "encoder_decoder":
        bart_style = objective_kind == "bart_denoising" or (
            objective_kind is None and tokenizer.bos_id is not None
        )
        start = tokenizer.eos_id if bart_style else tokenizer.pad_id
    return TokenIdsConfig(
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        decoder_start_id=start,
    )


def fill_token_ids(
    config: ModelConfig, tokenizer: TokenizerRoles, objective_kind: str | None = None
) -> ModelConfig:
    """`config` with each special id it lacks (None) from `token_ids`; ids past the embedding
    (tokens a foreign tokenizer added) stay None."""
    known = token_ids(tokenizer, config.family, objective_kind)
    filled = {}
    for name, value in config.tokens.items():
        guess = getattr(known, name)
        fits = guess is not None and guess < config.vocab_size
        filled[name] = value if value is not None or not fits else guess
    return dataclasses.replace(config, tokens=TokenIdsConfig(**filled))


def tokenizer_dir(checkpoint: Path) -> Path:
    """The directory holding the tokenizer of a checkpoint: beside it, or its run directory."""
    for folder in (checkpoint, _run_dir_of(checkpoint)):
        if (folder / TOKENIZER_FILES[0]).is_file():
            return folder
    raise LmforgeError(f"no {TOKENIZER_FILES[0]} in {checkpoint} or its run directory")


def copy_tokenizer(source: Path, run_dir: Path) -> None:
    """Copy the tokenizer files of directory `source` (those it has) into `run_dir`."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            _write_bytes(run_dir / name, (source / name).read_bytes())


# --- pretraining runs -------------------------------------------------------------------------


def load_pretraining_config(source: str, overrides: list[str] | dict[str, str]) -> RunConfig:
    """The RunConfig of `lmforge pretrain SOURCE`: a preset name, a YAML file, or a run or
    checkpoint directory to continue pretraining from (its model settings; its weights are
    loaded through `init_from`)."""
    path = Path(source)
    if not path.is_dir():
        return load_run_config(source, overrides)
    model = read_model_config_dict(resolve_checkpoint(path))
    return run_config_from_tree({"model": model, "init_from": str(path)}, overrides)


def _identity(config: dict) -> dict:
    picked = {}
    for key in _IDENTITY_KEYS:
        section, name = (key, None) if isinstance(key, str) else key
        value = config.get(section, {})
        picked[f"{section}.{name}" if name else section] = value.get(name) if name else value
    # The token ids follow from the tokenizer (data.path) and the objective, compared already;
    # config.yaml files of older versions do not have them.
    picked["model"] = {key: value for key, value in picked["model"].items() if key != "tokens"}
    return picked


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return ""


def check_run_dir(config: RunConfig) -> Path | None:
    """Decide where pretraining starts: None (fresh) or the checkpoint to resume from."""
    run_dir = Path(config.run.dir)
    if config.resume not in ("auto", "never"):
        return resolve_checkpoint(Path(config.resume))
    saved = run_dir / CONFIG_FILE
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    if not saved.is_file():
        raise LmforgeError(
            f"{run_dir} exists and is not an lmforge run directory; choose another --run.dir"
        )
    if config.resume == "never":
        raise LmforgeError(
            f"{run_dir} already holds a run; choose another --run.dir, "
            "or --resume=auto to continue it"
        )
    difference = _first_difference(_identity(read_yaml(saved)), _identity(to_dict(config)))
    if difference:
        raise LmforgeError(
            f"{run_dir} holds a different run ({difference}); choose another --run.dir"
        )
    return latest_checkpoint(run_dir)


def write_run_files(config: RunConfig, data_dir: Path) -> None:
    """config.yaml and the data's tokenizer, before the first step."""
    run_dir = Path(config.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG_FILE, yaml_text(config))
    copy_tokenizer(data_dir, run_dir)


# --- fine-tuning runs -------------------------------------------------------------------------


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a folder that holds something: a finished run must never be mixed with a new one.
    The folder itself is made only once the data has been read and checked."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise LmforgeError(
            f"{run_dir} already exists and is not empty; pass a new --run.dir or delete it"
        )


def write_finetune_run_files(
    config: FinetuneConfig,
    *,
    task_name: str,
    metric: str,
    task_state: dict[str, Any],
    tokenizer_source: Path,
) -> None:
    """config.yaml, task.json (what `lmforge predict` needs to rebuild the task: its name, options
    and state, e.g. the label set) and the tokenizer of the pretrained model."""
    run_dir = Path(config.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG_FILE, yaml_text(config))
    info = {"task": task_name, "pretrained": config.pretrained, "metric": metric}
    write_json(run_dir / TASK_FILE, info | {"options": to_dict(config)["task"], **task_state})
    copy_tokenizer(tokenizer_source, run_dir)


def read_task_info(run_dir: Path) -> dict[str, Any]:
    """task.json of a fine-tuning run."""
    try:
        return json.loads((run_dir / TASK_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise LmforgeError(
            f"{run_dir} is not a fine-tuning run (no readable task.json); "
            "pass the --run.dir of `lmforge finetune`"
        ) from None
