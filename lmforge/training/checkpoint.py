"""Training checkpoints: save (weights, optimizer, trainer state), load for resuming, pruning.

Layout (`lmforge.run_dir` owns the names and the atomic writes)::

    RUN_DIR/checkpoints/step-0000100/model.safetensors    weights; tied tensors stored once
                                    /optimizer.pt         optimizer state_dict (weights_only load)
                                    /trainer_state.json   step, tokens, data position, RNG, extra
                                    /model_config.json    the ModelConfig as a dict
    RUN_DIR/checkpoints/LATEST                            "step-0000100", replaced atomically
    RUN_DIR/checkpoints/best/model.safetensors            the lowest validation loss so far
                            /trainer_state.json           its step, tokens and evaluation
                            /model_config.json

`best` (checkpoint.keep_best) holds weights only: it is for generate, convert, finetune and
`lmforge pretrain RUN/checkpoints/best`, never for resuming (a run resumes from LATEST), so it costs
about a third of a step checkpoint with AdamW. Keep-last pruning never sees it (it is no step-*),
and it is replaced the same way, assembled in `best.tmp` and renamed into place.

A checkpoint is written into `step-0000100.tmp`, each file fsynced, then renamed into place; only
then is `LATEST` replaced. A crash at any point therefore leaves `LATEST` naming a complete
checkpoint, and leftover `.tmp` directories are ignored by readers.

A checkpoint whose weights or optimizer state hold NaN or inf is refused before anything is
written (one isfinite pass per tensor: milliseconds for small models, about a second for 1B
parameters on a CPU, next to a write of several GB): LATEST always names a model that can continue,
and as every published checkpoint is finite, keep-last pruning, which never deletes the one just
written, never deletes the newest good one.

Distributed use: pass the unwrapped module (`ddp.module`); only one process may write, so call
`save_checkpoint` on rank 0 (or pass `is_writer=rank == 0` everywhere). Gathering sharded (FSDP)
model or optimizer state into full state dicts is the caller's job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from lmforge.errors import LmforgeError, reporting_write_failure
from lmforge.models.weights import dedupe_tied, load_model_weights
from lmforge.run_dir import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    TRAINER_STATE_FILE,
    checkpoint_dir,
    fsync_file,
    latest_checkpoint,
    publish_best,
    publish_checkpoint,
    resolve_checkpoint,
    staging_dir,
    staging_dirs,
    step_dirs,
    write_json,
)
from lmforge.training.rng import capture_rng_state, restore_rng_state

__all__ = ["load_checkpoint", "save_best_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


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
    final = checkpoint_dir(run_dir, step)
    if not is_writer:
        return final
    _check_finite(model, optimizer, step, final.parent)
    tmp = staging_dir(final)
    # rng goes last: it is long and no one reads it by eye.
    state = {**trainer_state, "step": step}
    state["rng"] = state.pop("rng", None) or capture_rng_state()
    intact = _intact_after_failure(run_dir)
    with reporting_write_failure(final, intact=intact, discard=tmp):
        _save_model(model, tmp / MODEL_FILE)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            fsync_file(tmp / OPTIMIZER_FILE)
        write_json(tmp / TRAINER_STATE_FILE, state, indent=1)
        write_json(tmp / MODEL_CONFIG_FILE, dict(model_config))
        publish_checkpoint(tmp, final)
    _prune(final.parent, keep_last, keep=final.name)
    logger.info("saved checkpoint %s", final)
    return final


def save_best_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    model_state: Mapping[str, torch.Tensor],
    trainer_state: Mapping[str, Any],
    model_config: Mapping[str, Any],
) -> Path:
    """Replace `RUN_DIR/checkpoints/best` with the weights `model_state` (a full state dict: an
    FSDP model's gathered on the writer) of `step`; return its directory. One process writes."""
    final = Path(run_dir) / CHECKPOINTS_DIR / BEST_DIR
    name = next((key for key, tensor in model_state.items() if _non_finite(tensor)), None)
    if name is not None:
        raise non_finite_error(step, final.parent, what=name)
    tmp = staging_dir(final)
    with reporting_write_failure(final, intact=_intact_after_failure(run_dir), discard=tmp):
        _save_state(model_state, tmp / MODEL_FILE)
        write_json(tmp / TRAINER_STATE_FILE, {**trainer_state, "step": step}, indent=1)
        write_json(tmp / MODEL_CONFIG_FILE, dict(model_config))
        publish_best(tmp, final)
    logger.debug("saved best checkpoint %s (step %d)", final, step)  # the evaluation line says
    return final


def _non_finite(tensor: Any) -> bool:
    return torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all()


def _check_finite(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int, checkpoints: Path
) -> None:
    """Refuse to checkpoint NaN or inf: it would replace a good checkpoint with a poisoned one."""
    name = first_non_finite(model, optimizer)
    if name is not None:
        raise non_finite_error(step, checkpoints, what=name)


def first_non_finite(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> str | None:
    """The name of the first weight or optimizer-state tensor holding NaN or inf, or None; of a
    sharded (DTensor) one, this process's shard is checked."""
    tensors = dict(model.state_dict())
    if optimizer is not None:  # any optimizer, Muon's pair too: walk its state dict
        tensors |= dict(_nested_tensors(optimizer.state_dict(), "optimizer"))
    for name, tensor in tensors.items():
        if _non_finite(tensor.to_local() if hasattr(tensor, "to_local") else tensor):
            return name
    return None


def non_finite_error(step: int, checkpoints: Path, *, what: str) -> LmforgeError:
    latest = latest_checkpoint(checkpoints.parent) if checkpoints.is_dir() else None
    kept = f"the last good checkpoint is {latest}" if latest else "none was saved before"
    return LmforgeError(
        f"refusing to save the checkpoint of step {step}: {what} holds NaN or inf "
        f"(the training diverged); {kept}; rerun with a lower --train.lr"
    )


def _nested_tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) for every tensor inside nested dicts and lists."""
    if torch.is_tensor(value):
        yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _nested_tensors(item, f"{name}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nested_tensors(item, f"{name}.{index}")


def _intact_after_failure(run_dir: str | os.PathLike[str]) -> str:
    """What a failed checkpoint write leaves: the checkpoint LATEST names, untouched (the new one
    is assembled beside it and only then named)."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return "no checkpoint was complete yet; rerun the same command to start again"
    return f"the last complete checkpoint {latest.name} is intact; rerun the same command to resume"


def _save_model(model: nn.Module, path: Path) -> None:
    _save_state(model.state_dict(), path)


def _save_state(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Save a state dict with tied tensors stored once (safetensors refuses shared storage)."""
    tensors: dict[str, torch.Tensor] = {}
    used_storages: set[int] = set()
    for name, tensor in dedupe_tied(dict(state))[0].items():
        storage = tensor.untyped_storage().data_ptr()
        # A tensor that shares storage with another kept one without being the same view (e.g. a
        # slice of a fused projection) must be copied, or safetensors would refuse it.
        tensor = tensor.detach().clone() if storage in used_storages else tensor.detach()
        used_storages.add(storage)
        tensors[name] = tensor.contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
    fsync_file(path)


def _prune(checkpoints: Path, keep_last: int, *, keep: str) -> None:
    """Delete stale `.tmp` dirs and all but the newest `keep_last` checkpoints (never `keep`)."""
    for stale in staging_dirs(checkpoints):
        shutil.rmtree(stale, ignore_errors=True)
    if keep_last <= 0:
        return
    for path in step_dirs(checkpoints)[:-keep_last]:
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


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
    return read_trainer_state(directory, restore_rng=restore_rng)


def read_trainer_state(directory: Path, *, restore_rng: bool) -> dict[str, Any]:
    """A checkpoint's trainer_state.json (either format); with `restore_rng`, its RNG states are
    restored as well."""
    state_path = directory / TRAINER_STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LmforgeError(f"cannot read {state_path}: {error}") from error
    if restore_rng and "rng" in state:
        restore_rng_state(state["rng"])
    return state


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
