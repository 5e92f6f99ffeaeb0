"""The run directory: the one module that knows where each file of a run lies, and writes them.

A pretraining run (`lmforge pretrain`; `convert --from-hf` writes its tokenizer and checkpoint)::

    RUN_DIR/.lock                            held by the process training it (run_lock.py); its PID
    RUN_DIR/config.yaml                      the resolved RunConfig; its identity keys name the run
    RUN_DIR/data.json                        the data's resolved path and what its manifest says
    RUN_DIR/tokenizer.json, special_tokens.json    copied from the data directory
    RUN_DIR/metrics.jsonl, tensorboard/, curves.png
    RUN_DIR/checkpoints/step-0000100/        model.safetensors, optimizer.pt, trainer_state.json,
                                             model_config.json (the ModelConfig as a dict)
    RUN_DIR/checkpoints/LATEST               "step-0000100", the newest complete checkpoint
    RUN_DIR/checkpoints/best/                the weights of the lowest validation loss so far
                                             (checkpoint.keep_best): model.safetensors,
                                             model_config.json, trainer_state.json; no optimizer

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

Starting a pretraining run goes in this order, so that nothing is written by a process that
should not run: take the lock (`lock_run_dir`), clear the debris of a crash (`remove_leftovers`:
a checkpoint caught being replaced is put back before LATEST is read), check (`check_run_dir`:
one identity check for every way of starting), forget the history of a run that reached no
checkpoint (`start_clean`), then write the run files (`write_run_files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
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
from lmforge.run_lock import hold_lock, release_lock

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
DATA_FILE = "data.json"
DATA_MANIFEST_FILE = "manifest.json"
"""The manifest of a prepared data directory (data/shards.py)."""
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
BEST_DIR = "best"
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
_OLD_SUFFIX = ".old"

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
    _replace_dir(staging, final)
    write_text(final.parent / LATEST_FILE, final.name + "\n")
    _fsync_dir(final.parent)


def publish_best(staging: Path, final: Path) -> None:
    """Rename the assembled `staging` to `final` (`checkpoints/best`), replacing the previous
    best; LATEST is left alone: resuming continues from the newest checkpoint, not the best."""
    _replace_dir(staging, final)
    _fsync_dir(final.parent)


def _replace_dir(staging: Path, final: Path) -> None:
    # The old one is moved aside, not deleted first: a crash in between leaves `.old`, which
    # remove_leftovers puts back.
    _fsync_dir(staging)
    if final.exists():
        old = final.with_name(final.name + _OLD_SUFFIX)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


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


def best_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """`RUN_DIR/checkpoints/best`, or None when the run has kept no best (yet)."""
    best = Path(run_dir) / CHECKPOINTS_DIR / BEST_DIR
    return best if is_checkpoint(best) else None


def _read_latest(checkpoints: Path) -> Path | None:
    latest = checkpoints / LATEST_FILE
    if not latest.is_file():
        # LATEST is written just after its checkpoint is renamed into place: a crash in between,
        # or a user who deleted a damaged LATEST, leaves the newest complete step-* to take.
        complete = [path for path in _step_dirs_or_none(checkpoints) if is_checkpoint(path)]
        return complete[-1] if complete else None
    name = latest.read_bytes()[:200].decode("utf-8", "replace").strip()
    path = checkpoints / name
    if not _STEP_DIR.match(name) or not is_checkpoint(path):
        raise LmforgeError(
            f"{latest} names checkpoint {name!r}, which does not exist or is incomplete; "
            "point --resume at an existing step-* directory, or fix LATEST or delete it "
            "(the newest complete step-* directory is then used)"
        )
    return path


def _step_dirs_or_none(checkpoints: Path) -> list[Path]:
    return step_dirs(checkpoints) if checkpoints.is_dir() else []


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Turn a run dir (its LATEST), its `checkpoints/` dir, a `step-*` dir or `checkpoints/best`
    into a checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"no checkpoint at {path}: the path does not exist")
    if is_checkpoint(path):
        return path
    for checkpoints in (path, path / CHECKPOINTS_DIR):
        latest = _read_latest(checkpoints)
        if latest is not None:
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
    """The identity keys of a config dict; raises KeyError/TypeError/AttributeError when a
    section is missing or not a mapping (a damaged config.yaml)."""
    picked = {}
    for key in _IDENTITY_KEYS:
        section, name = (key, None) if isinstance(key, str) else key
        value = config[section]
        picked[f"{section}.{name}" if name else section] = value[name] if name else dict(value)
    # The token ids follow from the tokenizer and the objective, compared already; config.yaml
    # files of older versions do not have them.
    picked["model"] = {key: value for key, value in picked["model"].items() if key != "tokens"}
    # A relative and an absolute spelling of one folder are one data set (data.json keeps the
    # resolved path; a config.yaml of an older version is resolved from here).
    picked["data.path"] = str(Path(picked["data.path"]).expanduser().resolve())
    return picked


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    # In the order of the fields (config.yaml keeps it): the model's family and sizes come
    # before the details of its components.
    for key in [*old, *(key for key in new if key not in old)]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b and key in old:  # a key an older version did not record is not compared
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return ""


def _run_files(run_dir: Path) -> list[Path]:
    """What a run directory holds besides its lock."""
    return [path for path in run_dir.iterdir() if path.name != LOCK_FILE]


def _refuse_foreign(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise LmforgeError(f"--run.dir {run_dir} is a file; choose a directory path")
    if run_dir.is_dir() and _run_files(run_dir) and not (run_dir / CONFIG_FILE).is_file():
        raise LmforgeError(
            f"{run_dir} exists and is not an lmforge run directory; choose another --run.dir"
        )


def lock_run_dir(run_dir: Path) -> None:
    """Hold RUN_DIR/.lock for the rest of the process (`run_lock`), making the folder if needed;
    a folder that holds something other than a run is refused first, so no lock is left in it."""
    _refuse_foreign(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LmforgeError(
            f"cannot create {run_dir} ({error.strerror}); choose a --run.dir you can write to"
        ) from None
    hold_lock(run_dir / LOCK_FILE, what=str(run_dir))


def unlock_run_dir(run_dir: Path) -> None:
    """Give up RUN_DIR/.lock at the end of a run in a process that goes on (API, notebook)."""
    release_lock(run_dir / LOCK_FILE)


def check_run_dir(config: RunConfig) -> Path | None:
    """Decide where pretraining starts, before anything is written: None (from step 0) or the
    checkpoint to resume from. Every way in (a fresh run, a rerun, --resume=PATH, init_from)
    passes the same checks: the identity keys, the tokenizer and the data of each run it
    continues, and a checkpoint that can be resumed."""
    run_dir = Path(config.run.dir)
    _refuse_foreign(run_dir)
    holds_run = (run_dir / CONFIG_FILE).is_file()
    if holds_run and config.resume == "never":
        raise LmforgeError(
            f"{run_dir} already holds a run; choose another --run.dir, "
            "or --resume=auto to continue it"
        )
    if config.resume not in ("auto", "never"):
        resume_from = resolve_checkpoint(Path(config.resume))
    else:
        resume_from = latest_checkpoint(run_dir) if holds_run else None
    data_dir = Path(config.data.path)
    expected = _identity(to_dict(config))
    if holds_run:
        refusal = (f"{run_dir} holds a different run", "choose another --run.dir")
        _check_same_run(run_dir, expected, data_dir, refusal)
    if resume_from is not None:
        other = _run_dir_of(resume_from)
        if not holds_run or other.resolve() != run_dir.resolve():
            refusal = (
                f"checkpoint {resume_from} belongs to a different run",
                "resume it with that run's settings, or start from its weights: "
                f"`lmforge pretrain {resume_from}`",
            )
            _check_same_run(other, expected, data_dir, refusal)
        _check_resumable(resume_from)
    elif config.init_from is not None:
        _check_tokenizer(_tokenizer_of(resolve_checkpoint(config.init_from)), data_dir)
    return resume_from


def _check_same_run(
    run_dir: Path, expected: dict, data_dir: Path, refusal: tuple[str, str]
) -> None:
    """Refuse to continue the run in `run_dir` with other identity keys (`refusal`: what is
    refused and what to do), tokenizer or data; what it does not record (older versions,
    converted checkpoints) is not compared."""
    data = None
    if (run_dir / CONFIG_FILE).is_file():
        saved = _saved_identity(run_dir)
        data = _read_json_or_none(run_dir / DATA_FILE)
        if isinstance(data, dict) and "path" in data:
            saved["data.path"] = data["path"]
        difference = _first_difference(saved, expected)
        if difference:
            raise LmforgeError(f"{refusal[0]} ({difference}); {refusal[1]}")
    # The tokenizer before the data's other fields: its message says what to do about it.
    _check_tokenizer(run_dir / TOKENIZER_FILES[0], data_dir)
    if isinstance(data, dict):
        _check_data(data, data_identity(data_dir), data_dir)


def _saved_identity(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if (run_dir / TASK_FILE).is_file():
        raise LmforgeError(f"{run_dir} holds a fine-tuning run; choose another --run.dir")
    try:
        return _identity(read_yaml(path))
    except (LmforgeError, KeyError, TypeError, AttributeError, ValueError) as error:
        reason = str(error).splitlines()[0] if isinstance(error, LmforgeError) else repr(error)
        raise LmforgeError(
            f"{path} is empty or damaged ({reason}); restore it, or delete {run_dir} "
            "to start the run over"
        ) from None


def _check_data(saved: dict, now: dict, data_dir: Path) -> None:
    saved = {key: value for key, value in saved.items() if key != "path"}
    difference = _first_difference(saved, {key: now.get(key) for key in saved})
    if difference:
        raise LmforgeError(
            f"{data_dir} was prepared again since this run started ({difference}); give the "
            "data the run was trained on, or choose another --run.dir"
        )


def _check_tokenizer(tokenizer_file: Path | None, data_dir: Path) -> None:
    """The data's tokens must be those of the tokenizer the weights were trained with."""
    if tokenizer_file is None or not tokenizer_file.is_file():
        return
    manifest = _read_json_or_none(data_dir / DATA_MANIFEST_FILE) or {}
    run_sha = _sha256(tokenizer_file)
    if run_sha is None:
        return  # unreadable: nothing to compare with
    # The manifest names the tokenizer the ids were made with; the file beside it is the one
    # the run loads (its special ids): both must be the run's.
    for data_sha in (manifest.get("tokenizer_sha256"), _sha256(data_dir / TOKENIZER_FILES[0])):
        if data_sha is None or data_sha == run_sha:
            continue
        raise LmforgeError(
            f"{data_dir} was tokenized with another tokenizer than {tokenizer_file} "
            f"(sha256 {data_sha[:12]}... vs {run_sha[:12]}...); prepare the data with "
            f"`lmforge data prepare --tokenizer {tokenizer_file.parent}`, or choose another "
            "--run.dir"
        )


def _tokenizer_of(checkpoint: Path) -> Path | None:
    try:
        return tokenizer_dir(checkpoint) / TOKENIZER_FILES[0]
    except LmforgeError:
        return None  # nothing to compare with


def _check_resumable(checkpoint: Path) -> None:
    """A checkpoint to resume from needs its trainer state and optimizer state."""
    state = checkpoint / TRAINER_STATE_FILE
    fix = (
        f"delete {checkpoint} (and {LATEST_FILE} if it names it: the newest remaining "
        "checkpoint is then used), or pass --resume=PATH of another checkpoint"
    )
    try:
        step = json.loads(state.read_text(encoding="utf-8"))["step"]
        if not isinstance(step, int):
            raise TypeError(f"step is {step!r}")
    except FileNotFoundError:
        raise LmforgeError(f"{state} is missing, so it cannot be resumed; {fix}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LmforgeError(f"{state} is damaged ({reason}); {fix}") from None
    # A sharded checkpoint keeps its optimizer state among its shards.
    if not (checkpoint / OPTIMIZER_FILE).is_file() and not (checkpoint / SHARDED_DIR).is_dir():
        raise LmforgeError(
            f"{checkpoint} holds no {OPTIMIZER_FILE}, so it cannot be resumed; continue "
            f"pretraining from its weights instead: `lmforge pretrain {checkpoint} --run.dir=NEW`"
        )


def data_identity(data_dir: Path) -> dict[str, Any]:
    """What data.json records of the data a run trains on: its resolved path and what its
    manifest says of its content (prepared again with other inputs or another tokenizer, it
    differs)."""
    manifest = _read_json_or_none(data_dir / DATA_MANIFEST_FILE) or {}
    splits = manifest.get("splits") or {}
    return {
        "path": str(data_dir.expanduser().resolve()),
        "tokenizer_sha256": manifest.get("tokenizer_sha256"),
        "inputs": manifest.get("inputs"),
        "options": manifest.get("options"),
        "num_tokens": {name: split.get("num_tokens") for name, split in splits.items()},
    }


def _read_json_or_none(path: Path) -> Any:
    """The JSON value in `path`; None when it is absent or unreadable (then not compared)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def remove_leftovers(run_dir: Path) -> None:
    """Clear what a crash left half-written; call it holding the lock, so that no live writer
    owns them. `*.tmp` files and `step-*.tmp` directories go; a `step-*.old` (or `best.old`)
    directory whose checkpoint was caught being replaced (publish_checkpoint, publish_best) is put
    back, else removed."""
    checkpoints = run_dir / CHECKPOINTS_DIR
    olds = [*checkpoints.glob(f"step-*{_OLD_SUFFIX}"), checkpoints / (BEST_DIR + _OLD_SUFFIX)]
    for old in (path for path in olds if path.is_dir()):
        final = old.with_name(old.name.removesuffix(_OLD_SUFFIX))
        if final.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, final)
    for folder in (run_dir, checkpoints):
        for path in folder.glob(f"*{_STAGING_SUFFIX}"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def start_clean(run_dir: Path) -> None:
    """Forget the history of a run that never reached a checkpoint: its rerun starts again at
    step 0, and the rows of the lost steps must not stay beside the new ones."""
    for name in (METRICS_FILE, CURVES_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)


def write_run_files(config: RunConfig, data_dir: Path) -> None:
    """config.yaml (atomically, and only when it changed), data.json, and the data's tokenizer
    unless the run has one (check_run_dir found it the same), before the first step."""
    run_dir = Path(config.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_if_changed(run_dir / CONFIG_FILE, yaml_text(config))
    _write_if_changed(
        run_dir / DATA_FILE, json.dumps(data_identity(Path(config.data.path)), indent=2) + "\n"
    )
    if not (run_dir / TOKENIZER_FILES[0]).is_file():
        copy_tokenizer(data_dir, run_dir)


def _write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return
    write_text(path, text)


# --- fine-tuning runs -------------------------------------------------------------------------


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a folder that holds something: a finished run must never be mixed with a new one.
    The folder itself is made only once the data has been read and checked."""
    if run_dir.exists() and (not run_dir.is_dir() or _run_files(run_dir)):
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
    and state, e.g. the label set) and the tokenizer of the pretrained model, in a new folder
    locked for the rest of the process (run_lock.py)."""
    run_dir = Path(config.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hold_lock(run_dir / LOCK_FILE, what=str(run_dir))
    # Checked again holding the lock: another process may have filled the folder meanwhile.
    check_new_run_dir(run_dir)
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
