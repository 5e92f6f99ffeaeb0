"""A model's weights in a checkpoint's `model.safetensors`: loading them, and tied tensors.

safetensors refuses tensors that share storage, so tied weights (a tied output head and the token
embedding) are stored once, under the first name of their tie group in state-dict order
(`dedupe_tied`), and given back to every name of the group on loading. Saving belongs to training
checkpoints (`training/checkpoint.py`); loading is shared with inference and fine-tuned runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.run_dir import MODEL_FILE, SHARDED_DIR, resolve_checkpoint

_MAX_NAMED_KEYS = 3  # how many offending keys an error message lists


def dedupe_tied(
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


def load_model_weights(path: str | os.PathLike[str], model: nn.Module) -> None:
    """Load `model.safetensors` of a checkpoint into `model`, restoring tied weights. `path` is
    anything `run_dir.resolve_checkpoint` accepts."""
    file = resolve_checkpoint(path) / MODEL_FILE
    if not file.is_file() and (file.parent / SHARDED_DIR).is_dir():
        raise LmforgeError(
            f"{file.parent} is a sharded (FSDP) checkpoint without {MODEL_FILE}; write it with "
            f"lmforge convert --consolidate {file.parent.parent.parent} --step N"
        )
    try:
        loaded = load_file(file)
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LmforgeError(
            f"{file} is truncated or corrupt ({reason}); resume from an earlier checkpoint"
        ) from error
    expected = model.state_dict()
    _, groups = dedupe_tied(expected)
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


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED_KEYS])
    more = len(items) - _MAX_NAMED_KEYS
    return f"{shown} (+{more} more)" if more > 0 else shown
