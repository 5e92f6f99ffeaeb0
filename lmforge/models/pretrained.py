"""Load a trained model for inference from a run directory or a checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from lmforge.data.tokenizer import Tokenizer, load_tokenizer
from lmforge.models.lm import LanguageModel, build_model
from lmforge.models.weights import load_model_weights
from lmforge.run_dir import read_model_config, resolve_checkpoint, tokenizer_dir


def load_pretrained(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    init: Literal["pretrained", "random"] = "pretrained",
    seed: int = 0,
) -> tuple[LanguageModel, Tokenizer, Path]:
    """Model (eval mode), tokenizer and the resolved checkpoint directory of `path`.

    init="random": the same architecture freshly initialised from `seed` instead of the saved
    weights, the baseline that shows what pretraining brought."""
    checkpoint = resolve_checkpoint(Path(path))
    tokenizer = load_tokenizer(tokenizer_dir(checkpoint))
    model_config = read_model_config(checkpoint, tokenizer)
    if init == "random":
        torch.manual_seed(seed)
        return build_model(model_config, device=device).eval(), tokenizer, checkpoint
    model = build_model(model_config, device=device)
    load_model_weights(checkpoint, model)
    return model.eval(), tokenizer, checkpoint
