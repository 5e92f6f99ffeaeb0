"""Validation during pretraining: fixed windows of the val split and the metrics over them.

Loss (nats per target token), perplexity, accuracy of the most likely token at the target
positions and, for autoregressive objectives, bits per byte of the raw text. The windows are the
split's own, in order, and the objective's randomness (MLM masks) is seeded from a constant, so
every evaluation of every run sees the same batches and the metrics compare across steps and runs.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from lmforge.data.shards import TokenDataset
from lmforge.data.windows import WindowSampler, check_split_size, eval_batches
from lmforge.distributed.setup import DistributedContext, all_reduce_sum
from lmforge.objectives.base import Objective
from lmforge.training.precision import Precision
from lmforge.training.rng import seeded_generator

logger = logging.getLogger(__name__)

_EVAL_SEED = 20_190_101
"""Seeds the validation batches' randomness (MLM masks): the same masks at every evaluation and in
every run, so validation metrics are comparable across steps and runs."""


class Validation:
    """The validation windows of one run and how to evaluate a model on them."""

    def __init__(
        self,
        sampler: WindowSampler,
        *,
        objective: Objective,
        precision: Precision,
        context: DistributedContext,
        micro_batch_size: int,
        max_batches: int,
    ) -> None:
        self.sampler = sampler
        self.objective = objective
        self.precision = precision
        self.context = context
        self.micro_batch_size = micro_batch_size
        self.max_batches = max_batches
        """Micro-batches per evaluation; 0: the whole split."""

    @classmethod
    def of_split(
        cls, val_data: TokenDataset | None, window_len: int, *, seq_len: int, **settings
    ) -> Validation | None:
        """Fixed windows of the val split; None (no evaluation) when it holds none at all.
        `settings` are the constructor's keywords."""
        if val_data is None:
            return None
        sampler = WindowSampler(val_data, window_len, seed=0, shuffle=False)
        context: DistributedContext = settings["context"]
        if sampler.num_windows == 0:
            if context.is_main:
                logger.warning(
                    "%s has no validation split longer than one sequence: no evaluation",
                    val_data.data_dir,
                )
            return None
        needed = settings["micro_batch_size"] * context.world_size
        check_split_size(sampler, needed, seq_len=seq_len)
        return cls(sampler, **settings)

    @torch.no_grad()
    def run(self, model: nn.Module, raw_model: nn.Module) -> dict[str, float]:
        """The metrics of `raw_model` (forward without the DDP wrapper `model`, whose train/eval
        mode is set and restored)."""
        was_training = model.training
        model.eval()
        device = self.context.device
        totals = torch.zeros(3, dtype=torch.float64, device=device)
        for index, windows in enumerate(
            eval_batches(
                self.sampler,
                micro_batch_size=self.micro_batch_size,
                max_batches=self.max_batches or None,
                rank=self.context.rank,
                world_size=self.context.world_size,
            )
        ):
            generator = seeded_generator(_EVAL_SEED, index, self.context.rank)
            batch = self.objective.make_batch(windows, generator)
            batch = {k: v.to(device) for k, v in batch.items()}
            with self.precision.autocast():
                output = raw_model(**batch)
            counts = [output.loss_sum, output.num_targets, output.num_correct]
            totals += torch.stack([c.double() for c in counts])
        loss_sum, count, correct = all_reduce_sum(totals).tolist()
        model.train(was_training)
        loss = loss_sum / max(count, 1)
        metrics = {
            "val_loss": loss,
            "val_perplexity": math.exp(min(loss, 50.0)),
            "val_accuracy": correct / max(count, 1),
        }
        if self.objective.is_autoregressive:
            # bits/byte = nats/token * tokens/byte / ln 2: comparable across tokenizers (and with
            # character-level models on ASCII text, where bytes are characters). Only a loss over
            # every token is a code length of the text.
            metrics["val_bpb"] = loss * self.sampler.dataset.tokens_per_byte / math.log(2)
        return metrics
