"""The training loop: resume, then train_step -> maybe_log -> maybe_evaluate -> maybe_checkpoint.

The trainer knows nothing of model families: an objective turns token windows into the model's
keyword arguments (with `labels`) and the model returns a summed loss and its number of targets.
Each micro-batch's loss is divided by the number of targets of the whole optimizer step, across
accumulation and ranks, so neither accumulation nor world size changes the update (STYLE.md 5).
Data order is a pure function of the step (see data/windows.py) and so is the learning rate, so a
checkpoint needs only the step, the weights, the optimizer state and the RNG states to continue
exactly (plus the divergence guard's state and the learning-rate scale of rollbacks).

Reliability (docs/reliability.md): the divergence guard (training/guard.py) skips bad updates and,
after too many in a row, stops the run or rolls it back to the last good checkpoint; SIGTERM and
the first Ctrl-C (training/stopping.py) finish the step, save a checkpoint and stop.

Keep-best (checkpoint.keep_best): an evaluation whose validation loss beats every earlier one
replaces checkpoints/best with the current weights, whether or not the step saves a checkpoint.
The best loss so far is part of the trainer state, so a resumed run judges as the uninterrupted
one did; a rollback keeps it (the best on disk stays the best measured).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lmforge.config.loading import to_dict
from lmforge.config.schema import RunConfig
from lmforge.data.shards import TokenDataset
from lmforge.data.windows import WindowSampler, check_split_size, micro_batches
from lmforge.distributed.checkpointing import gather_model_state
from lmforge.distributed.fsdp import gradient_sync
from lmforge.distributed.setup import DistributedContext, all_reduce_sum, barrier, to_device
from lmforge.errors import LmforgeError, RunStopped
from lmforge.objectives.base import Objective
from lmforge.run_dir import latest_checkpoint
from lmforge.training.checkpoint import save_best_checkpoint, save_checkpoint
from lmforge.training.flops import training_flops_per_token
from lmforge.training.guard import DivergenceGuard, Verdict, warn_if_lr_is_high
from lmforge.training.metrics import MetricsWriter
from lmforge.training.precision import Precision
from lmforge.training.progress import TrainingProgress
from lmforge.training.rng import seeded_generator
from lmforge.training.schedules import lr_at
from lmforge.training.sharded_checkpoint import load_training_checkpoint, save_sharded_checkpoint
from lmforge.training.step import TrainingStep
from lmforge.training.stopping import GracefulStop
from lmforge.training.validation import Validation

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    loss: float
    num_targets: int
    num_tokens: int
    """Input tokens of the step across ranks (num_targets counts only the labelled ones)."""
    grad_norm: float
    lr: float
    verdict: Verdict
    """Whether the update was applied or skipped (training/guard.py)."""


@dataclass
class TrainerState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    last_eval: dict = field(default_factory=dict)
    lr_scale: float = 1.0
    """Multiplies the schedule's learning rate: train.rollback_lr_factor per rollback."""
    rollbacks: int = 0
    best_eval: dict = field(default_factory=dict)
    """The evaluation of checkpoints/best (step, val_loss, ...); empty before the first."""


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
        self.validation = Validation.of_split(
            val_data,
            window_len,
            seq_len=train.seq_len,
            objective=objective,
            precision=precision,
            context=context,
            micro_batch_size=self.micro_batch_size,
            max_batches=config.eval.max_batches,
        )
        self.precision = precision
        self.guard = DivergenceGuard(
            max_bad_steps=train.max_bad_steps, spike_factor=train.spike_factor
        )
        self.optimizer_step = TrainingStep(
            optimizer=optimizer,
            parameters=raw_model.parameters(),
            precision=precision,
            grad_clip=train.grad_clip,
            schedule=self._lr_at,
            guard=self.guard,
            mean_over_ranks=self._mean_over_ranks,
        )
        if context.is_main:
            warn_if_lr_is_high(train.lr)
        self.state = TrainerState()
        self._saved_step = -1
        self.resume_from = resume_from
        self.flops_per_token = training_flops_per_token(
            config.model, train.seq_len, target_fraction=objective.target_fraction
        )
        self.matmul_peak = matmul_peak
        self.metrics = MetricsWriter(
            self.run_dir, tensorboard=config.log.tensorboard, is_writer=context.is_main
        )

    # ---------------------------------------------------------------- loop

    def fit(self) -> dict:
        """Train to train.max_steps; return the last evaluation's metrics."""
        self.resume()
        self._progress = TrainingProgress(
            total=self.config.train.max_steps,
            initial=self.state.step,
            enabled=self.config.log.progress and self.context.is_main,
        )
        try:
            with GracefulStop(agree=self._on_any_rank) as stop:
                self._loop(stop)
        finally:
            self._progress.close()
            self.metrics.close()
        return self.state.last_eval

    def _loop(self, stop: GracefulStop) -> None:
        window_start, window_tokens = time.perf_counter(), 0
        while self.state.step < self.config.train.max_steps:
            step_start = time.perf_counter()
            result = self.train_step()
            self.state.step += 1
            self.state.tokens_seen += result.num_tokens
            self.state.elapsed_s += time.perf_counter() - step_start
            window_tokens += result.num_tokens
            tokens_per_s = window_tokens / max(time.perf_counter() - window_start, 1e-9)
            self._progress.update(self.state.step, result.loss, result.lr, tokens_per_s)
            if result.verdict is Verdict.SKIP and self.context.is_main:
                self._progress.write(
                    f"step {self.state.step}: update skipped, {self.guard.last_reason}"
                )
            if self.maybe_log(result, tokens_per_s):
                window_start, window_tokens = time.perf_counter(), 0
            self.maybe_evaluate()
            if self.guard.has_diverged:
                self.on_divergence()
                continue
            self.maybe_checkpoint()
            if stop.should_stop() and self.state.step < self.config.train.max_steps:
                self.stop_here(stop)  # (a signal after the last step lets the run finish)

    def resume(self) -> None:
        if self.resume_from is None:
            return
        self._restore(self.resume_from)
        if self.context.is_main:
            logger.info("resumed from %s at step %d", self.resume_from, self.state.step)

    def _restore(self, checkpoint: Path) -> None:
        # Either format: a sharded checkpoint at any world size, by a sharded model or not.
        saved = load_training_checkpoint(checkpoint, self.raw_model, self.optimizer)
        self.state = TrainerState(
            step=saved["step"],
            tokens_seen=saved.get("tokens_seen", 0),
            elapsed_s=saved.get("elapsed_s", 0.0),
            last_eval=saved.get("last_eval", {}),
            lr_scale=saved.get("lr_scale", 1.0),
            rollbacks=saved.get("rollbacks", 0),
            best_eval=saved.get("best_eval", {}),
        )
        self.guard.load_state_dict(saved.get("guard", {}))
        self.metrics.truncate_after(self.state.step)

    # ---------------------------------------------------------------- one step

    def train_step(self) -> StepResult:
        # Dropout randomness is a pure function of (seed, step, rank), like the data order, so a
        # resumed run (on any number of ranks) draws exactly what the uninterrupted one would have.
        torch.manual_seed(
            self.config.run.seed * 1_000_003 + self.state.step * 1_009 + self.context.rank
        )
        batches = self._step_batches()
        num_targets = self._global_target_count(batches)
        stats = self.optimizer_step(
            self.state.step, batches, self._token_weighted_loss(num_targets)
        )
        num_tokens = self.config.train.batch_size * batches[0]["input_ids"].shape[1]
        return StepResult(
            loss=stats.loss,
            num_targets=num_targets,
            num_tokens=num_tokens,
            grad_norm=stats.grad_norm,
            lr=stats.lr,
            verdict=stats.verdict,
        )

    def _lr_at(self, step: int) -> float:
        train = self.config.train
        return self.state.lr_scale * lr_at(
            step,
            max_lr=train.lr,
            warmup_steps=train.warmup_steps,
            max_steps=train.max_steps,
            decay=train.decay,
            min_lr_ratio=train.min_lr_ratio,
            decay_fraction=train.decay_fraction,
            cooldown=train.cooldown,
        )

    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(values) / self.context.world_size

    def _on_any_rank(self, flag: bool) -> bool:
        return all_reduce_sum(torch.tensor(float(flag), device=self.context.device)).item() > 0

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
            batches.append(to_device(batch, self.context.device))  # pinned, async on CUDA
        return batches

    def _global_target_count(self, batches: list[dict[str, torch.Tensor]]) -> int:
        local = sum((batch["labels"] != -100).sum() for batch in batches)
        return int(all_reduce_sum(torch.as_tensor(local, device=self.context.device)).item())

    def _token_weighted_loss(
        self, num_targets: int
    ) -> Callable[[dict[str, torch.Tensor], bool], torch.Tensor]:
        """The micro-batch loss of the step: gradients end up d(sum of losses / num_targets).

        DDP averages gradients over ranks, so each rank's loss is scaled by the world size to turn
        that average back into the global sum. The same scaling makes the rank average of the
        micro-batch losses' sum (what TrainingStep reports) the step's loss per target.
        """
        scale = self.context.world_size / max(num_targets, 1)

        def micro_loss(batch: dict[str, torch.Tensor], is_last: bool) -> torch.Tensor:
            with self._maybe_no_sync(is_last):
                output = self.model(**batch)
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
        # A skipped update is always logged: the record of a divergence is its bad steps.
        if not self._is_due(self.config.log.every) and result.verdict is not Verdict.SKIP:
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
            "skipped_steps": self.guard.skipped_steps,
        }
        self.metrics.log(row)
        return True

    def maybe_evaluate(self) -> None:
        if self.validation is None or not self._is_due(self.config.eval.every):
            return
        metrics = self.validation.run(self.model, self.raw_model)
        self.state.last_eval = {"step": self.state.step, **metrics}
        is_best = self.maybe_save_best(metrics)
        row = {"step": self.state.step, **metrics}
        if "val_loss" in self.state.best_eval:  # the best so far, beside this evaluation
            row["best_val_loss"] = self.state.best_eval["val_loss"]
        self.metrics.log(row)
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if self.context.is_main:
            best_note = " (best so far: saved as checkpoints/best)" if is_best else ""
            self._progress.write(f"step {self.state.step}: {summary}{best_note}")

    def maybe_save_best(self, metrics: dict) -> bool:
        """Replace checkpoints/best when this evaluation's loss is the lowest so far (every rank
        calls: an FSDP model's weights are gathered first); return whether it did."""
        loss = metrics.get("val_loss", float("nan"))
        best = self.state.best_eval.get("val_loss", float("inf"))
        # A NaN loss compares False: a diverging model is never the best.
        if not self.config.checkpoint.keep_best or not loss < best:
            return False
        self.state.best_eval = {"step": self.state.step, **metrics}
        full_state = gather_model_state(self.raw_model)
        if self.context.is_main:
            save_best_checkpoint(
                self.run_dir,
                self.state.step,
                full_state,
                {"tokens_seen": self.state.tokens_seen, "eval": self.state.best_eval},
                model_config=to_dict(self.config.model),
            )
        barrier()  # no rank reads or replaces best while rank 0 writes it
        return True

    def maybe_checkpoint(self) -> None:
        if not self._is_due(self.config.checkpoint.every):
            return
        # Weights in a streak of skipped updates may be the start of a divergence, and a rollback
        # must land on good ones: skip the periodic save (the last step saves all the same).
        if self.guard.consecutive_bad and self.state.step < self.config.train.max_steps:
            return
        self.save()

    def save(self) -> None:
        """Checkpoint the current step (rank 0 writes)."""
        trainer_state = {
            "step": self.state.step,
            "tokens_seen": self.state.tokens_seen,
            "elapsed_s": self.state.elapsed_s,
            "last_eval": self.state.last_eval,
            "data_position": {"windows_consumed": self.state.step * self.config.train.batch_size},
            "lr_scale": self.state.lr_scale,
            "rollbacks": self.state.rollbacks,
            "guard": self.guard.state_dict(),
            "best_eval": self.state.best_eval,
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
        self._saved_step = self.state.step

    # ---------------------------------------------------------------- divergence and stops

    def on_divergence(self) -> None:
        """Roll back to the last good checkpoint with a lower learning rate, or stop in one line.

        Every rank gets here at the same step (the guard judges rank-averaged numbers) and reads
        the same LATEST, so all roll back alike."""
        train, step = self.config.train, self.state.step
        what = f"training diverged at step {step}: {self.guard.describe()}"
        latest = latest_checkpoint(self.run_dir)
        if latest is not None and train.on_divergence == "rollback":
            if self.state.rollbacks < train.max_rollbacks:
                self._roll_back(latest, what)
                return
            what += f" after {self.state.rollbacks} rollbacks"
        lr = train.lr * self.state.lr_scale
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
        hint = " (or --train.on_divergence=rollback)" if train.on_divergence == "stop" else ""
        raise LmforgeError(
            f"{what}; {kept}; rerun with a lower --train.lr (now {lr:g}) or more "
            f"--train.warmup_steps{hint}"
        )

    def _roll_back(self, checkpoint: Path, what: str) -> None:
        rollbacks = self.state.rollbacks + 1
        lr_scale = self.state.lr_scale * self.config.train.rollback_lr_factor
        best_eval = self.state.best_eval  # checkpoints/best is not rolled back
        self._restore(checkpoint)
        self.state.rollbacks, self.state.lr_scale = rollbacks, lr_scale
        self.state.best_eval = best_eval
        self.guard.consecutive_bad = 0
        # Saved again at once: a run resumed from here continues with the lowered rate.
        self.save()
        self.metrics.log({"step": self.state.step, "rollback": rollbacks, "lr_scale": lr_scale})
        if self.context.is_main:
            self._progress.write(
                f"{what}; rolled back to step {self.state.step} with the learning rate "
                f"x{lr_scale:g} (rollback {rollbacks} of {self.config.train.max_rollbacks})"
            )

    def stop_here(self, stop: GracefulStop) -> None:
        """Save the current step (unless just saved) and end the run with RunStopped."""
        if self._saved_step != self.state.step:
            self.save()
        # Rank 0's write must end before any rank exits: torchrun stops every rank when one does.
        barrier()
        message = (
            f"stopped at step {self.state.step} ({stop.signal_name}), checkpoint saved; "
            "rerun the same command to continue"
        )
        raise RunStopped(message if self.context.is_main else "", stop.exit_code)
