"""Load a trained model for inference from a run directory or a checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.config.loading import model_config_from_dict
from lmforge.data.tokenizer import Tokenizer, load_tokenizer
from lmforge.errors import LmforgeError
from lmforge.models.lm import LanguageModel, build_model
from lmforge.training.checkpoint import load_model_weights, resolve_checkpoint


def find_tokenizer(checkpoint: Path) -> Tokenizer:
    """The tokenizer saved beside the checkpoint, or in its run directory."""
    for folder in (checkpoint, checkpoint.parent.parent):
        if (folder / "tokenizer.json").is_file():
            return load_tokenizer(folder)
    raise LmforgeError(f"no tokenizer.json in {checkpoint} or its run directory")


def load_pretrained(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[LanguageModel, Tokenizer, Path]:
    """Model (eval mode), tokenizer and the resolved checkpoint directory of `path`."""
    checkpoint = resolve_checkpoint(Path(path))
    config_file = checkpoint / "model_config.json"
    try:
        model_config = model_config_from_dict(json.loads(config_file.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise LmforgeError(f"cannot read {config_file}: {error}") from None
    model = build_model(model_config, device=device)
    load_model_weights(checkpoint, model)
    return model.eval(), find_tokenizer(checkpoint), checkpoint
