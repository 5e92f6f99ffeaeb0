"""The interface every downstream task implements, and `task_class`, which finds a registered task.

A task owns everything that differs between downstream jobs: reading its files, turning examples
into model features, the head on top of the pretrained model, the loss, decoding predictions and the
metric. The fine-tuning loop (`lmforge.training.finetune`) is the same for all of them:

    task = task_class(name)(options, tokenizer, model_config)
    train = task.read(path)                 # examples, as in the file
    task.fit_labels(train)                  # e.g. the label set; saved by `state()`
    model = task.build_model(backbone)      # backbone + head, an nn.Module
    features = task.features(train)         # tokenized once
    batch = task.collate(features[i:j])     # dict of tensors
    loss = task.loss(model, batch)          # mean over the batch's targets
    metrics, rows = task.evaluate(model, examples, batch_size)   # rows -> predictions.jsonl
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from lmforge.config.finetune import task_entry
from lmforge.config.model import ModelConfig
from lmforge.data.framing import framing_for
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.models.lm import LanguageModel

_FAMILY_MODELS = {"encoder": "encoder (BERT, RoBERTa)", "decoder": "decoder (GPT-2, BLOOM)",
                  "encoder_decoder": "encoder-decoder (T5, BART)"}  # fmt: skip
"""Each family with the reference model types, for the refusal of a task/model pair."""


class Task:
    """Base class of the downstream tasks. Subclasses set the class variables and implement the
    methods that raise NotImplementedError."""

    name: ClassVar[str]
    """The `lmforge finetune` subcommand, e.g. "classify"."""
    families: ClassVar[tuple[str, ...]]
    """Model families that can do this task ("encoder", "decoder", "encoder_decoder")."""
    metric: ClassVar[str]
    """Key of `evaluate`'s metrics that picks the best checkpoint; higher is better."""

    def __init__(self, options: Any, tokenizer: Tokenizer, model_config: ModelConfig) -> None:
        if model_config.family not in self.families:
            family = model_config.family.replace("_", "-")
            can = " or ".join(_FAMILY_MODELS[f] for f in self.families)
            article = "an" if family.startswith("e") else "a"
            raise LmforgeError(
                f"{article} {family} model cannot do `{self.name}`; it works with {can} models"
            )
        self.options = options
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.framing = framing_for(
            tokenizer,
            model_config.family,
            num_segment_types=model_config.embedding.num_segment_types,
        )
        """The special tokens around and between this model type's texts."""

    # --- data ---------------------------------------------------------------------------------

    def read(self, path: str) -> list[Any]:
        """The labelled examples of a file (or parallel-file prefix), in file order."""
        raise NotImplementedError

    def read_inputs(self, path: str) -> list[Any]:
        """Examples of a file for `lmforge predict`: the same formats, labels optional."""
        return self.read(path)

    def inputs_from_texts(self, texts: list[str]) -> list[Any]:
        """Examples to predict from plain texts (the Python API's `predict`)."""
        raise LmforgeError(
            f"{self.name} reads its inputs from a file; pass a pathlib.Path to one in the format "
            "of `lmforge predict --input`"
        )

    def split_validation(self, examples: list[Any], fraction: float) -> tuple[list, list]:
        """(train, validation): the last `fraction` of the examples (tasks with groups, such as
        SQuAD articles, override this to keep groups whole)."""
        cut = len(examples) - max(1, round(len(examples) * fraction))
        return examples[:cut], examples[cut:]

    def fit_labels(self, train: list[Any]) -> None:
        """Learn what the training set defines (the label set); default: nothing."""

    def check_labels(self, examples: list[Any], path: str) -> None:
        """Refuse evaluation examples whose labels the training set never showed."""

    def state(self) -> dict[str, Any]:
        """What `predict` needs besides the weights (labels, ...); JSON-serialisable."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` of a fine-tuned run."""

    def features(self, examples: list[Any]) -> list[Any]:
        """Tokenized training features (one or more per example, e.g. QA windows)."""
        raise NotImplementedError

    def collate(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        """A padded batch of training features."""
        raise NotImplementedError

    # --- model --------------------------------------------------------------------------------

    def build_model(self, backbone: LanguageModel) -> nn.Module:
        """The pretrained backbone with this task's head (the backbone itself for generation)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of the batch (scalar, with gradients)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, examples: list[Any], batch_size: int
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """(metrics in points, 0-100, with `self.metric` among them; one prediction row per
        example, JSON-serialisable, holding the input, the prediction and the reference)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(
        self, model: nn.Module, examples: list[Any], batch_size: int
    ) -> list[dict[str, Any]]:
        """One JSON-serialisable row per example: its input and the prediction."""
        raise NotImplementedError


def task_class(name: str) -> type[Task]:
    """The Task subclass of `name` (imported lazily: each task pulls in only its own needs)."""
    import importlib

    module, cls = task_entry(name).task_class.split(":")
    return getattr(importlib.import_module(module), cls)


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int) -> torch.Tensor:
    """Right-pad lists of ints into a (B, T) int64 tensor, T = the longest row."""
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def to_model_device(batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The batch on the model's device: evaluation and prediction run outside the training
    loop's own transfers."""
    device = next(model.parameters()).device
    return {key: value.to(device) for key, value in batch.items()}
