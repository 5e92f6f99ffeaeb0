"""Sharded model and optimizer state on disk, with `torch.distributed.checkpoint` (DCP).

Each rank writes the shards it holds (`__<rank>_0.distcp` files) and rank 0 the index of all of
them (`.metadata`); loading reads, for each tensor of the model at hand, the pieces that overlap
its own shard, whatever the world size that wrote them. So a run saved by 2 processes resumes on
1 or 4, and one process can read the whole model back (`read_model_state`) to consolidate it.
State dicts are keyed by parameter name on both sides (`get_state_dict`), the optimizer's too, so
a sharded (FSDP) and an unsharded model read each other's checkpoints.

Safety: tensor data is read as raw bytes or with `torch.load(weights_only=True)`, but torch 2.13
reads `.metadata` with a plain `pickle.load`, which can run code. `_SafeReader` unpickles it with
an allow-list of the classes DCP's metadata is made of, so a tampered file fails to load instead.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from lmforge.distributed.fsdp import is_sharded
from lmforge.errors import LmforgeError

METADATA_FILE = ".metadata"
"""DCP's index, written last by rank 0: a directory holding it is a complete save."""


def save_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its part of the model's and the optimizer's state into `directory`."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    with _single_process_is_intended():
        dcp.save(
            {"model": model_state, "optimizer": optimizer_state},
            storage_writer=dcp.FileSystemWriter(directory),
        )


def load_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Every rank reads its part of the state saved in `directory` into `model` and `optimizer`."""
    if optimizer is None:
        model_state = get_model_state_dict(model)
        _load({"model": model_state}, directory)
        set_state_dict(model, (), model_state_dict=model_state, optim_state_dict={})
        return
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    _load(state, directory)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )


def gather_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full, unsharded state dict on the CPU of rank 0 (all ranks must call; the others get
    an empty dict). For an unsharded model, its own state dict."""
    if not is_sharded(model):
        return model.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def read_model_state(directory: Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill `template` (full-size CPU tensors, named as the model's state dict) from the sharded
    state in `directory`, in this one process, whatever the world size that wrote it."""
    state = {"model": template}
    _load(state, directory, no_dist=True)
    return state["model"]


def _load(state: dict[str, Any], directory: Path, *, no_dist: bool = False) -> None:
    if not (directory / METADATA_FILE).is_file():
        raise LmforgeError(f"{directory} holds no sharded checkpoint ({METADATA_FILE} is missing)")
    try:
        with _single_process_is_intended():
            dcp.load(state, storage_reader=_SafeReader(directory), no_dist=no_dist)
    except dcp.api.CheckpointException as error:
        reason = str(error).strip().splitlines()[-1]
        raise LmforgeError(
            f"{directory} does not fit this model ({reason}); it was made for a different "
            "architecture or optimizer"
        ) from error


@contextlib.contextmanager
def _single_process_is_intended():
    """DCP warns when no process group exists; one process (a run on one device, consolidation)
    is a supported way to save and load here, not a mistake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


class _SafeReader(dcp.FileSystemReader):
    """DCP's file reader, with `.metadata` unpickled from allow-listed classes only."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self.path) / METADATA_FILE
        with open(path, "rb") as file:
            try:
                metadata = _MetadataUnpickler(file).load()
            except (pickle.UnpicklingError, EOFError, AttributeError) as error:
                raise LmforgeError(f"{path} is not a checkpoint index ({error})") from error
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


_ALLOWED_MODULES = ("torch.distributed.checkpoint.metadata",)
_ALLOWED_NAMES = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP metadata (dataclasses of names, shapes, offsets and dtypes) and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            module in _ALLOWED_MODULES
            or (module, name) in _ALLOWED_NAMES
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        )
        if not allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def is_sharded_state(directory: str | os.PathLike[str]) -> bool:
    """Whether `directory` holds a complete DCP save."""
    return (Path(directory) / METADATA_FILE).is_file()
