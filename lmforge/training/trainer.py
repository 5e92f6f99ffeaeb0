"""The training loop: resume, then train_step -> maybe_log -> maybe_evaluate -> maybe_checkpoint.

The trainer knows nothing of model families: an objective turns token windows into the model's
keyword arguments (with `labels`) and the model returns a summed loss and its number of targets.
Each micro-batch's loss is divided by the number of targets of the whole optimizer step, across
accumulation and ranks, so neither accumulation nor world size changes the update (STYLE.md 5).
Data order is a pure function of the step (see data/windows.py) and so is the learning rate, so a
checkpoint needs only the step, the weights, the optimizer state and the RNG states to continue
exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.config.loading import to_dict
from lmforge.config.schema import RunConfig
from lmforge.data.shards import TokenDataset
from lmforge.data.windows import WindowSampler, check_split_size, eval_batches, micro_batches
from lmforge.distributed.fsdp import gradient_sync
from lmforge.distributed.setup import DistributedContext, all_reduce_sum
from lmforge.objectives.base import Objective
from lmforge.training.checkpoint import save_checkpoint
from lmforge.training.flops import training_flops_per_token
from lmforge.training.metrics import MetricsWriter
from lmforge.training.precision import Precision
from lmforge.training.progress import TrainingProgress
from lmforge.training.schedules import lr_at
from lmforge.training.sharded_checkpoint import load_training_checkpoint, save_sharded_checkpoint
from lmforge.training.step import TrainingStep

logger = logging.getLogger(__name__)

_EVAL_SEED = 20_190_101
"""Seeds the validation batches' randomness (MLM masks): the same masks at every evaluation and in
every run, so validation metrics are comparable across steps and runs."""


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys, well mixed (numpy's SeedSequence), so nearby keys
    such as consecutive steps give unrelated streams."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


@dataclass
class StepResult:
    loss: float
    num_targets: int
    num_tokens: int
    """Input tokens of the step across ranks (num_targets counts only the labelled ones)."""
    grad_norm: float
    lr: float


@dataclass
class TrainerState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    last_eval: dict = field(default_factory=dict)


class Trainer:
    def __init__(
        self,
        *,
        config: RunConfig,
        model: nn.Module,
        raw_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Objective,
        train_data: TokenDataset,
        val_data: TokenDataset | None,
        context: DistributedContext,
        precision: Precision,
        matmul_peak: float,
        resume_from: Path | None,
    ) -> None:
        self.config = config
        self.model = model  # possibly wrapped (DDP, compile); forward goes through it
        self.raw_model = raw_model  # the bare module, for checkpoints
        self.optimizer = optimizer
        self.objective = objective
        self.context = context
        self.run_dir = Path(config.run.dir)
        train = config.train
        self.micro_batch_size = train.micro_batch_size or train.batch_size // context.world_size
        # A window holds what the objective reads for one example: seq_len + 1 tokens for CLM
        # and MLM, more for span corruption, fewer for BART's framing.
        window_len = objective.raw_length(train.seq_len)
        self.sampler = WindowSampler(train_data, window_len, seed=config.run.seed)
        check_split_size(self.sampler, 1, seq_len=train.seq_len)
        self.val_sampler = self._val_sampler(val_data, window_len)
        self.precision = precision
        self.optimizer_step = TrainingStep(
            optimizer=optimizer,
            parameters=raw_model.parameters(),
            precision=precision,
            grad_clip=train.grad_clip,
            schedule=self._lr_at,
        )
        self.state = TrainerState()
        self.resume_from = resume_from
        self.flops_per_token = training_flops_per_token(
            config.model, train.seq_len, target_fraction=objective.target_fraction
        )
        self.matmul_peak = matmul_peak
        self.metrics = MetricsWriter(
            self.run_dir, tensorboard=config.log.tensorboard, is_writer=context.is_main
        )

    def _val_sampler(self, val_data: TokenDataset | None, window_len: int) -> WindowSampler | None:
        """Fixed windows of the val split; None (no evaluation) when it holds none at all."""
        if val_data is None:
            return None
        sampler = WindowSampler(val_data, window_len, seed=0, shuffle=False)
        if sampler.num_windows == 0:
            if self.context.is_main:
                logger.warning(
                    "%s has no validation split longer than one sequence: no evaluation",
                    val_data.data_dir,
                )
            return None
        needed = self.micro_batch_size * self.context.world_size
        check_split_size(sampler, needed, seq_len=self.config.train.seq_len)
        return sampler

    # ---------------------------------------------------------------- loop

    def fit(self) -> dict:
        """Train to train.max_steps; return the last evaluation's metrics."""
        self.resume()
        max_steps = self.config.train.max_steps
        progress = TrainingProgress(
            total=max_steps,
            initial=self.state.step,
            enabled=self.config.log.progress and self.context.is_main,
        )
        self._progress = progress
        window_start, window_tokens = time.perf_counter(), 0
        try:
            while self.state.step < max_steps:
                step_start = time.perf_counter()
                result = self.train_step()
                self.state.step += 1
                tokens = result.num_tokens
                self.state.tokens_seen += tokens
                self.state.elapsed_s += time.perf_counter() - step_start
                window_tokens += tokens
                tokens_per_s = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                progress.update(self.state.step, result.loss, result.lr, tokens_per_s)
                if self.maybe_log(result, tokens_per_s):
                    window_start, window_tokens = time.perf_counter(), 0
                self.maybe_evaluate()
                self.maybe_checkpoint()
        finally:
            progress.close()
            self.metrics.close()
        return self.state.last_eval

    def resume(self) -> None:
        if self.resume_from is None:
            return
        # h15: either format; a sharded checkpoint at any world size, by a sharded model or not.
        saved = load_training_checkpoint(self.resume_from, self.raw_model, self.optimizer)
        self.state = TrainerState(
            step=saved["step"],
            tokens_seen=saved.get("tokens_seen", 0),
            elapsed_s=saved.get("elapsed_s", 0.0),
            last_eval=saved.get("last_eval", {}),
        )
        self.metrics.truncate_after(self.state.step)
        if self.context.is_main:
            logger.info("resumed from %s at step %d", self.resume_from, self.state.step)

    # ---------------------------------------------------------------- one step

    def train_step(self) -> StepResult:
        # Dropout randomness is a pure function of (seed, step, rank), like the data order, so a
        # resumed run (on any number of ranks) draws exactly what the uninterrupted one would have.
        torch.manual_seed(
            self.config.run.seed * 1_000_003 + self.state.step * 1_009 + self.context.rank
        )
        batches = self._step_batches()
        num_targets = self._global_target_count(batches)
        loss_sum = torch.zeros((), device=self.context.device)
        stats = self.optimizer_step(
            self.state.step, batches, self._token_weighted_loss(num_targets, loss_sum)
        )
        loss = all_reduce_sum(loss_sum).item() / num_targets
        num_tokens = self.config.train.batch_size * batches[0]["input_ids"].shape[1]
        return StepResult(
            loss=loss,
            num_targets=num_targets,
            num_tokens=num_tokens,
            grad_norm=stats.grad_norm,
            lr=stats.lr,
        )

    def _lr_at(self, step: int) -> float:
        train = self.config.train
        return lr_at(
            step,
            max_lr=train.lr,
            warmup_steps=train.warmup_steps,
            max_steps=train.max_steps,
            decay=train.decay,
            min_lr_ratio=train.min_lr_ratio,
        )

    def _step_batches(self) -> list[dict[str, torch.Tensor]]:
        windows = micro_batches(
            self.sampler,
            step=self.state.step,
            batch_size=self.config.train.batch_size,
            micro_batch_size=self.micro_batch_size,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        # Objective randomness (MLM masks) is a pure function of (seed, step, global micro-batch
        # index): numbering micro-batches across ranks makes 2 ranks x 1 micro-batch draw what
        # 1 rank x 2 micro-batches draws, and a resumed run what the uninterrupted one drew.
        first = self.context.rank * len(windows)
        batches = []
        for index, rows in enumerate(windows):
            generator = seeded_generator(self.config.run.seed, self.state.step, first + index)
            batch = self.objective.make_batch(rows, generator)
            batches.append(
                {k: v.to(self.context.device, non_blocking=True) for k, v in batch.items()}
            )
        return batches

    def _global_target_count(self, batches: list[dict[str, torch.Tensor]]) -> int:
        local = sum((batch["labels"] != -100).sum() for batch in batches)
        return int(all_reduce_sum(torch.as_tensor(local, device=self.context.device)).item())

    def _token_weighted_loss(
        self, num_targets: int, loss_sum: torch.Tensor
    ) -> Callable[[dict[str, torch.Tensor], bool], torch.Tensor]:
        """The micro-batch loss of the step: gradients end up d(sum of losses / num_targets).

        DDP averages gradients over ranks, so each rank's loss is scaled by the world size to turn
        that average back into the global sum. Each micro-batch's summed loss is added to
        `loss_sum` (in place) for the report.
        """
        scale = self.context.world_size / max(num_targets, 1)

        def micro_loss(batch: dict[str, torch.Tensor], is_last: bool) -> torch.Tensor:
            with self._maybe_no_sync(is_last):
                output = self.model(**batch)
            loss_sum.add_(output.loss_sum.detach().float())
            return output.loss_sum * scale

        return micro_loss

    def _maybe_no_sync(self, is_last: bool) -> contextlib.AbstractContextManager:
        # Gradients are synchronised (DDP all-reduce, FSDP reduce-scatter) once per step.
        return gradient_sync(self.model, enabled=is_last)

    # ---------------------------------------------------------------- periodic work

    def _is_due(self, every: int) -> bool:
        step = self.state.step
        return step == self.config.train.max_steps or (every > 0 and step % every == 0)

    def maybe_log(self, result: StepResult, tokens_per_s: float) -> bool:
        if not self._is_due(self.config.log.every):
            return False
        flops = tokens_per_s * self.flops_per_token
        row = {
            "step": self.state.step,
            "loss": result.loss,
            "lr": result.lr,
            "grad_norm": result.grad_norm,
            "tokens_per_s": tokens_per_s,
            "mfu": flops / (self.matmul_peak * self.context.world_size),
            "tokens_seen": self.state.tokens_seen,
            "elapsed_s": self.state.elapsed_s,
        }
        self.metrics.log(row)
        return True

    def maybe_evaluate(self) -> None:
        if self.val_sampler is None or not self._is_due(self.config.eval.every):
            return
        metrics = self.evaluate()
        self.state.last_eval = {"step": self.state.step, **metrics}
        self.metrics.log({"step": self.state.step, **metrics})
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if self.context.is_main:
            self._progress.write(f"step {self.state.step}: {summary}")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats per target token), perplexity, accuracy of the most likely token
        at the target positions and, for autoregressive objectives, bits per byte of the raw text.
        """
        assert self.val_sampler is not None
        was_training = self.model.training
        self.model.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.context.device)
        for index, windows in enumerate(
            eval_batches(
                self.val_sampler,
                micro_batch_size=self.micro_batch_size,
                max_batches=self.config.eval.max_batches or None,
                rank=self.context.rank,
                world_size=self.context.world_size,
            )
        ):
            generator = seeded_generator(_EVAL_SEED, index, self.context.rank)
            batch = self.objective.make_batch(windows, generator)
            batch = {k: v.to(self.context.device) for k, v in batch.items()}
            with self.precision.autocast():
                output = self.raw_model(**batch)
            counts = [output.loss_sum, output.num_targets, output.num_correct]
            totals += torch.stack([c.double() for c in counts])
        loss_sum, count, correct = all_reduce_sum(totals).tolist()
        self.model.train(was_training)
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
            metrics["val_bpb"] = loss * self.val_sampler.dataset.tokens_per_byte / math.log(2)
        return metrics

    def maybe_checkpoint(self) -> None:
        if not self._is_due(self.config.checkpoint.every):
            return
        trainer_state = {
            "step": self.state.step,
            "tokens_seen": self.state.tokens_seen,
            "elapsed_s": self.state.elapsed_s,
            "last_eval": self.state.last_eval,
            "data_position": {"windows_consumed": self.state.step * self.config.train.batch_size},
        }
        if self.config.train.fsdp:  # h15: every rank writes its shards
            save_sharded_checkpoint(
                self.run_dir,
                self.state.step,
                self.raw_model,
                self.optimizer,
                trainer_state,
                model_config=to_dict(self.config.model),
                keep_last=self.config.checkpoint.keep_last,
                context=self.context,
                consolidate=self.state.step == self.config.train.max_steps,
            )
        elif self.context.is_main:
            save_checkpoint(
                self.run_dir,
                self.state.step,
                self.raw_model,
                self.optimizer,
                trainer_state,
                model_config=to_dict(self.config.model),
                keep_last=self.config.checkpoint.keep_last,
            )
