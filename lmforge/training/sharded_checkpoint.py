"""Sharded training checkpoints (runs with `--train.fsdp=true`), and their consolidation.

Layout (`lmforge.run_dir` owns the names)::

    RUN_DIR/checkpoints/step-0000100/sharded/        model + optimizer state, a file per rank and
                                                    .metadata (torch.distributed.checkpoint)
                                    /trainer_state.json, model_config.json   as unsharded ones
                                    /model.safetensors   only once consolidated: the last
                                                    checkpoint of a run, or `convert --consolidate`

The writing protocol of `training/checkpoint.py` holds: rank 0 makes the staging directory, every
rank writes its shards into it, rank 0 writes the JSON files after DCP's own final exchange (its
`.metadata` is written once every rank has written), renames the directory into place and only
then replaces LATEST. A crash at any point leaves LATEST naming a complete checkpoint.

A consolidated checkpoint's model.safetensors has the layout of an unsharded one, so generate,
finetune, convert and `lmforge pretrain CHECKPOINT` read it as they read any other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from lmforge.distributed.checkpointing import (
    gather_model_state,
    load_state,
    read_model_state,
    save_state,
)
from lmforge.distributed.fsdp import is_sharded
from lmforge.distributed.setup import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
)
from lmforge.errors import LmforgeError
from lmforge.models.lm import build_model
from lmforge.models.weights import dedupe_tied
from lmforge.run_dir import (
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    SHARDED_DIR,
    TRAINER_STATE_FILE,
    checkpoint_dir,
    fsync_file,
    publish_checkpoint,
    read_model_config,
    resolve_checkpoint,
    staging_dir,
    write_json,
)

# One pruning rule for both formats; checkpoint.py keeps it private to its own saving.
from lmforge.training.checkpoint import _prune as prune_checkpoints
from lmforge.training.checkpoint import (
    first_non_finite,
    load_checkpoint,
    non_finite_error,
    read_trainer_state,
)
from lmforge.training.rng import capture_rng_state

__all__ = [
    "consolidate",
    "is_sharded_checkpoint",
    "load_sharded_checkpoint",
    "load_training_checkpoint",
    "save_sharded_checkpoint",
]

logger = logging.getLogger(__name__)


def is_sharded_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether the checkpoint `path` resolves to was written sharded."""
    return (resolve_checkpoint(path) / SHARDED_DIR).is_dir()


def save_sharded_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: Mapping[str, Any],
    *,
    model_config: Mapping[str, Any],
    keep_last: int,
    context: DistributedContext,
    consolidate: bool,
) -> Path:
    """Write the checkpoint for `step` from every rank (all must call); with `consolidate`, also
    the whole model as model.safetensors (gathered on rank 0)."""
    final = checkpoint_dir(run_dir, step)
    # Each rank checks its shards; any rank's NaN refuses the save on every rank.
    bad = first_non_finite(model, optimizer)
    if all_reduce_sum(torch.tensor(float(bad is not None), device=context.device)).item() > 0:
        raise non_finite_error(step, final.parent, what=bad or "a tensor on another rank")
    # Gathered before anything is written: it is a collective, like the save itself.
    full_state = gather_model_state(model) if consolidate else None
    tmp = broadcast_object(staging_dir(final) if context.is_main else None)
    assert isinstance(tmp, Path)
    save_state(tmp / SHARDED_DIR, model, optimizer)
    if context.is_main:
        if full_state is not None:
            _save_model_file(full_state, tmp / MODEL_FILE)
        state = {**trainer_state, "step": step, "rng": capture_rng_state()}
        write_json(tmp / TRAINER_STATE_FILE, state, indent=1)
        write_json(tmp / MODEL_CONFIG_FILE, dict(model_config))
        publish_checkpoint(tmp, final)
        prune_checkpoints(final.parent, keep_last, keep=final.name)
        logger.info("saved sharded checkpoint %s", final)
    # No rank runs ahead (or resumes, or exits) before the checkpoint is in place.
    barrier()
    return final


def load_training_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Resume from a checkpoint of either format; return its trainer state."""
    if is_sharded_checkpoint(path):
        return load_sharded_checkpoint(path, model, optimizer)
    if is_sharded(model):
        # Its optimizer.pt is keyed by parameter position, for one process's whole model.
        raise LmforgeError(
            f"{path} was written without --train.fsdp; resume it with --train.fsdp=false, or "
            "start a new run from its weights (lmforge pretrain CHECKPOINT --run.dir=NEW ...)"
        )
    return load_checkpoint(path, model, optimizer)


def load_sharded_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a sharded checkpoint into `model` (sharded or not, at any world size) and
    `optimizer`; return the trainer state, as `training.checkpoint.load_checkpoint` does."""
    directory = resolve_checkpoint(path)
    load_state(directory / SHARDED_DIR, model, optimizer)
    return read_trainer_state(directory, restore_rng=restore_rng)


def consolidate(run_dir: str | os.PathLike[str], step: int | None = None) -> Path:
    """Write model.safetensors into a sharded checkpoint of `run_dir` (the one LATEST names, or
    that of `step`) from its shards, in this one process; return the checkpoint directory."""
    directory = resolve_checkpoint(run_dir if step is None else checkpoint_dir(run_dir, step))
    if not (directory / SHARDED_DIR).is_dir():
        raise LmforgeError(f"{directory} is not a sharded checkpoint; it needs no consolidation")
    # The template is allocated, not initialised: the shards overwrite every value.
    abstract = build_model(read_model_config(directory), device="meta")
    template = {
        name: torch.empty(tensor.shape, dtype=tensor.dtype)
        for name, tensor in abstract.state_dict().items()
    }
    state = read_model_state(directory / SHARDED_DIR, template)
    tmp = directory / (MODEL_FILE + ".tmp")
    _save_model_file(state, tmp)
    os.replace(tmp, directory / MODEL_FILE)
    logger.info("consolidated %s", directory / MODEL_FILE)
    return directory


def _save_model_file(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """The full state dict as safetensors, as unsharded checkpoints store it."""
    tensors = {name: t.detach().contiguous() for name, t in dedupe_tied(state)[0].items()}
    save_file(tensors, path, metadata={"format": "pt"})
    fsync_file(path)
