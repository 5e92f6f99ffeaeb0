"""Training checkpoints: atomic save, safe load, keep-last-K pruning.

Layout (one directory per checkpoint, the newest complete one named by `LATEST`)::

    RUN_DIR/checkpoints/step-0000100/model.safetensors    weights; tied tensors stored once
                                    /optimizer.pt         optimizer state_dict (weights_only load)
                                    /trainer_state.json   step, tokens, data position, RNG, extra
                                    /model_config.json    the ModelConfig as a dict
    RUN_DIR/checkpoints/LATEST                            "step-0000100", replaced atomically

A checkpoint is written into `step-0000100.tmp`, each file fsynced, then renamed into place; only
then is `LATEST` replaced (tmp file + `os.replace`). A crash at any point therefore leaves `LATEST`
naming a complete checkpoint, and leftover `.tmp` directories are ignored by readers.

Distributed use: pass the unwrapped module (`ddp.module`); only one process may write, so call
`save_checkpoint` on rank 0 (or pass `is_writer=rank == 0` everywhere). Gathering sharded (FSDP)
model or optimizer state into full state dicts is the caller's job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.training.rng import capture_rng_state, restore_rng_state

__all__ = [
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "resolve_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_STATE_FILE = "trainer_state.json"
MODEL_CONFIG_FILE = "model_config.json"
LATEST_FILE = "LATEST"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_MAX_NAMED_KEYS = 3  # how many offending keys an error message lists


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


# --- saving -----------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: Mapping[str, Any],
    model_config: Mapping[str, Any],
    keep_last: int,
    *,
    is_writer: bool = True,
) -> Path:
    """Write the checkpoint for `step` and return its directory.

    `trainer_state` must be JSON-serialisable; `step` and, unless the caller supplies its own
    (e.g. gathered per rank), `rng` = `capture_rng_state()` are added to it. After writing,
    all but the newest `keep_last` checkpoints are deleted (`keep_last <= 0` keeps all); the one
    `LATEST` names is never deleted. With `is_writer=False` nothing is written and the path the
    writer uses is returned.
    """
    checkpoints = Path(run_dir) / "checkpoints"
    final = checkpoints / step_dir_name(step)
    if not is_writer:
        return final
    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crashed save of this very step
    tmp.mkdir()
    # rng goes last: it is long and no one reads it by eye.
    state = {**trainer_state, "step": step}
    state["rng"] = state.pop("rng", None) or capture_rng_state()
    _save_model(model, tmp / MODEL_FILE)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        _fsync_file(tmp / OPTIMIZER_FILE)
    _write_text(tmp / TRAINER_STATE_FILE, json.dumps(state, indent=1))
    _write_text(tmp / MODEL_CONFIG_FILE, json.dumps(dict(model_config), indent=2))
    _fsync_dir(tmp)
    _replace_dir(tmp, final)
    _write_text(checkpoints / (LATEST_FILE + ".tmp"), final.name + "\n")
    os.replace(checkpoints / (LATEST_FILE + ".tmp"), checkpoints / LATEST_FILE)
    _fsync_dir(checkpoints)
    _prune(checkpoints, keep_last, keep=final.name)
    logger.info("saved checkpoint %s", final)
    return final


def _save_model(model: nn.Module, path: Path) -> None:
    """Save the state dict with tied tensors stored once (safetensors refuses shared storage)."""
    tensors: dict[str, torch.Tensor] = {}
    used_storages: set[int] = set()
    for name, tensor in _dedupe_tied(model.state_dict())[0].items():
        storage = tensor.untyped_storage().data_ptr()
        # A tensor that shares storage with another kept one without being the same view (e.g. a
        # slice of a fused projection) must be copied, or safetensors would refuse it.
        tensor = tensor.detach().clone() if storage in used_storages else tensor.detach()
        used_storages.add(storage)
        tensors[name] = tensor.contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
    _fsync_file(path)


def _dedupe_tied(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Split `state` into (one tensor per tie group, group name -> all names in the group).

    Two entries are tied when they are the same view of the same storage; the group is named
    after its first entry in state-dict order.
    """
    kept: dict[str, torch.Tensor] = {}
    groups: dict[str, list[str]] = {}
    first_name: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        view = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
        )
        # Empty tensors may all report data_ptr 0; never treat them as tied.
        if tensor.numel() > 0 and view in first_name:
            groups[first_name[view]].append(name)
            continue
        first_name[view] = name
        kept[name] = tensor
        groups[name] = [name]
    return kept, groups


def _prune(checkpoints: Path, keep_last: int, *, keep: str) -> None:
    """Delete stale `.tmp` dirs and all but the newest `keep_last` checkpoints (never `keep`)."""
    for stale in checkpoints.glob("step-*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    if keep_last <= 0:
        return
    steps = sorted(
        (int(match.group(1)), path)
        for path in checkpoints.iterdir()
        if path.is_dir() and (match := _STEP_DIR.match(path.name))
    )
    for _, path in steps[:-keep_last]:
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; an existing `dst` (the same step saved again) is swapped out."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(dst.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames); not possible on every OS, hence best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- finding ----------------------------------------------------------------------------------


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint `RUN_DIR/checkpoints/LATEST` names, or None when there is none yet."""
    return _read_latest(Path(run_dir) / "checkpoints")


def _read_latest(checkpoints: Path) -> Path | None:
    latest = checkpoints / LATEST_FILE
    if not latest.is_file():
        return None
    name = latest.read_text(encoding="utf-8").strip()
    path = checkpoints / name
    if not name or not (path / MODEL_FILE).is_file():
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
    if (path / MODEL_FILE).is_file():
        return path
    for checkpoints in (path, path / "checkpoints"):
        if (checkpoints / LATEST_FILE).is_file():
            latest = _read_latest(checkpoints)
            assert latest is not None
            return latest
    raise LmforgeError(
        f"no checkpoint at {path}: expected a run dir with checkpoints/LATEST, "
        f"a checkpoints dir, or a step-* dir holding {MODEL_FILE}"
    )


# --- loading ----------------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and optimizer state) into `model` from `path`; return the trainer state.

    `path` is anything `resolve_checkpoint` accepts. With `restore_rng` the saved RNG states are
    restored too, so the next random draw equals the one an uninterrupted run would make.
    """
    directory = resolve_checkpoint(path)
    load_model_weights(directory, model)
    if optimizer is not None:
        _load_optimizer(directory / OPTIMIZER_FILE, optimizer)
    state_path = directory / TRAINER_STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LmforgeError(f"cannot read {state_path}: {error}") from error
    if restore_rng and "rng" in state:
        restore_rng_state(state["rng"])
    return state


def load_model_weights(path: str | os.PathLike[str], model: nn.Module) -> None:
    """Load `model.safetensors` of a checkpoint into `model`, restoring tied weights."""
    file = resolve_checkpoint(path) / MODEL_FILE
    try:
        loaded = load_file(file)
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LmforgeError(
            f"{file} is truncated or corrupt ({reason}); resume from an earlier checkpoint"
        ) from error
    expected = model.state_dict()
    _, groups = _dedupe_tied(expected)
    full: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for group in groups.values():
        present = next((name for name in group if name in loaded), None)
        if present is None:
            missing.append(group[0])
            continue
        full.update(dict.fromkeys(group, loaded[present]))  # restores the tie on copy
    unexpected = [name for name in loaded if name not in expected]
    _check_keys(file, missing, unexpected)
    _check_shapes(file, full, {name: expected[name] for name in groups})
    model.load_state_dict(full, strict=True)


def _check_keys(file: Path, missing: list[str], unexpected: list[str]) -> None:
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing keys {_some(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_some(unexpected)}")
    raise LmforgeError(
        f"{file} does not match the model ({'; '.join(parts)}); "
        "it was made for a different architecture; build the model from its model_config.json"
    )


def _check_shapes(
    file: Path, loaded: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    mismatched = [
        f"{name} {tuple(loaded[name].shape)} in checkpoint vs {tuple(tensor.shape)} in model"
        for name, tensor in expected.items()
        if loaded[name].shape != tensor.shape
    ]
    if mismatched:
        raise LmforgeError(
            f"{file} was made for a different model shape: {_some(mismatched)}; "
            "build the model from the checkpoint's model_config.json"
        )


def _load_optimizer(file: Path, optimizer: torch.optim.Optimizer) -> None:
    if not file.is_file():
        raise LmforgeError(
            f"{file} is missing; the checkpoint holds no optimizer state to resume from "
            "(load weights only, e.g. to fine-tune)"
        )
    try:
        # weights_only: a checkpoint is untrusted input and must never run pickled code.
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LmforgeError(f"{file} is truncated or corrupt ({reason})") from error
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as error:
        raise LmforgeError(
            f"{file} does not fit this optimizer ({error}); the checkpoint was made for a "
            "different model or optimizer setup"
        ) from error


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED_KEYS])
    more = len(items) - _MAX_NAMED_KEYS
    return f"{shown} (+{more} more)" if more > 0 else shown
