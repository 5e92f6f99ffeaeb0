"""The fine-tuning loop shared by every downstream task.

    load the pretrained model (or the same architecture freshly initialised, train.init=random)
    read train / validation (/ test) examples, fit the task's labels, tokenize once
    loop over shuffled epochs: AdamW, warmup + linear decay, accumulation, clipping, autocast
        every eval.every steps (default: each epoch) evaluate on validation; a better validation
        metric saves the checkpoint (keep only the best) and its predictions; early stopping
    reload the best checkpoint, evaluate the test set if given, write metrics.json and curves.png

The divergence guard (training/guard.py) skips bad updates as in pretraining; too many in a row
and the run stops with one line, keeping its best checkpoint. SIGTERM or the first Ctrl-C
(training/stopping.py) stops after the current step: the best checkpoint so far and its
predictions stay, metrics.json (written only by a finished run) is not written. Fine-tuning cannot
continue a stopped run (it keeps no optimizer state and only the best weights); the line says so.

What the run directory holds, and how each file is written: `lmforge.run_dir`.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.config.finetune import FinetuneConfig
from lmforge.config.loading import to_dict
from lmforge.config.model import with_dropout
from lmforge.distributed.setup import choose_device
from lmforge.errors import LmforgeError, RunStopped
from lmforge.kernels import apply_cpu_kernels
from lmforge.models.lm import LanguageModel, build_model
from lmforge.models.pretrained import load_pretrained
from lmforge.models.weights import load_model_weights
from lmforge.run_dir import (
    PREDICTIONS_FILE,
    RESULTS_FILE,
    TEST_PREDICTIONS_FILE,
    check_new_run_dir,
    tokenizer_dir,
    unlock_run_dir,
    write_finetune_run_files,
    write_json,
    write_jsonl,
)
from lmforge.tasks.base import Task, task_class
from lmforge.training.checkpoint import save_checkpoint
from lmforge.training.guard import DivergenceGuard, Verdict, warn_if_lr_is_high
from lmforge.training.metrics import MetricsWriter
from lmforge.training.optim import build_optimizer
from lmforge.training.plot import plot_run
from lmforge.training.precision import Precision, check_fp16_stable
from lmforge.training.progress import TrainingProgress
from lmforge.training.schedules import lr_at
from lmforge.training.step import TrainingStep
from lmforge.training.stopping import GracefulStop

logger = logging.getLogger(__name__)


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune `config.pretrained` on the task and return the contents of metrics.json."""
    try:
        return _finetune(config)
    finally:
        # The lock is taken when the run files are written; the process may go on (API,
        # notebook), the run is over.
        unlock_run_dir(Path(config.run.dir))


def _finetune(config: FinetuneConfig) -> dict[str, Any]:
    run_dir = Path(config.run.dir)
    check_new_run_dir(run_dir)
    device = choose_device(config.run.device)
    precision = Precision.from_name(config.train.precision, device)
    torch.manual_seed(config.run.seed)
    backbone, tokenizer, checkpoint = load_backbone(
        config.pretrained, config.train.init, config.train.dropout
    )
    check_fp16_stable(precision.name, backbone.config)
    task = task_class(config.task_name)(config.task, tokenizer, backbone.config)
    train, validation, test = _read_splits(task, config)
    task.fit_labels(train)
    for examples, path in ((validation, config.data.validation), (test, config.data.test)):
        task.check_labels(examples, path or config.data.train)
    model = apply_cpu_kernels(task.build_model(backbone)).to(device)  # the task head's linears
    features = task.features(train)
    write_finetune_run_files(
        config,
        task_name=task.name,
        metric=task.metric,
        task_state=task.state(),
        tokenizer_source=tokenizer_dir(checkpoint),
    )
    loop = _Loop(config, task, model, features, validation, run_dir, device, precision)
    best = loop.run()
    if loop.stopped_by is not None:
        raise RunStopped(loop.stop_line(), loop.stopped_by.exit_code)
    load_model_weights(best["checkpoint"], model)
    results = {
        "task": config.task_name,
        "pretrained": config.pretrained,
        "init": config.train.init,
        "train_examples": len(train),
        "validation_examples": len(validation),
        "best_step": best["step"],
        "validation": best["metrics"],
        "train_seconds": round(loop.train_seconds, 1),
    }
    if test:
        metrics, rows = task.evaluate(model.eval(), test, config.eval.batch_size)
        results["test"] = metrics
        write_jsonl(run_dir / TEST_PREDICTIONS_FILE, rows)
    write_json(run_dir / RESULTS_FILE, results)
    plot_run(run_dir, metric=f"val_{task.metric}")
    return results


def load_backbone(
    pretrained: str, init: str, dropout: float | None
) -> tuple[LanguageModel, Any, Path]:
    """The pretrained model, its tokenizer and checkpoint directory; with init="random" the same
    architecture freshly initialised; `dropout` (if set) is the rate of every dropout site the
    model type has (`with_dropout`: the reference model's sites, no others)."""
    model, tokenizer, checkpoint = load_pretrained(pretrained)
    cfg = model.config if dropout is None else with_dropout(model.config, dropout)
    if init == "random":
        return build_model(cfg), tokenizer, checkpoint
    if cfg is not model.config:
        state = model.state_dict()
        model = build_model(cfg)
        model.load_state_dict(state)
    return model.train(), tokenizer, checkpoint


class _Loop:
    """Steps, evaluations and best-checkpoint bookkeeping of one fine-tuning run."""

    def __init__(
        self,
        config: FinetuneConfig,
        task: Task,
        model: nn.Module,
        features: list,
        validation: list,
        run_dir: Path,
        device: torch.device,
        precision: Precision,
    ) -> None:
        self.config, self.task, self.model = config, task, model
        self.features, self.validation = features, validation
        self.run_dir, self.device = run_dir, device
        self.precision = precision
        train = config.train
        self.steps_per_epoch = max(1, math.ceil(len(features) / train.batch_size))
        self.max_steps = train.max_steps or math.ceil(train.epochs * self.steps_per_epoch)
        self.eval_every = config.eval.every or self.steps_per_epoch
        self.warmup = int(train.warmup_ratio * self.max_steps)
        optimizer = build_optimizer(
            model, lr=train.lr, weight_decay=train.weight_decay, betas=(train.beta1, train.beta2),
            kind=train.optimizer,  # issue 12: adamw | adafactor
        )  # fmt: skip
        # BERT's fine-tuning schedule: linear warmup, then linear decay to 0 at the last step.
        schedule = functools.partial(
            lr_at, max_lr=train.lr, warmup_steps=self.warmup, max_steps=self.max_steps,
            decay="linear", min_lr_ratio=0.0,
        )  # fmt: skip
        self.guard = DivergenceGuard(
            max_bad_steps=train.max_bad_steps, spike_factor=train.spike_factor
        )
        self.optimizer_step = TrainingStep(
            optimizer=optimizer,
            parameters=model.parameters(),
            precision=precision,
            grad_clip=train.grad_clip,
            schedule=schedule,
            guard=self.guard,
        )
        warn_if_lr_is_high(train.lr)
        self.rng = random.Random(config.run.seed)
        self.order: list[int] = []
        self.best: dict[str, Any] = {"score": -math.inf, "step": 0, "metrics": {}}
        self.stale_evaluations = 0
        self.train_seconds = 0.0
        self.step = 0
        self.stopped_by: GracefulStop | None = None

    def run(self) -> dict[str, Any]:
        log = self.config.log
        writer = MetricsWriter(self.run_dir, tensorboard=log.tensorboard, is_writer=True)
        progress = TrainingProgress(self.max_steps, enabled=log.progress, rate_name="examples_s")
        with writer, progress, GracefulStop() as stop:
            for step in range(1, self.max_steps + 1):
                self.step = step
                start = time.perf_counter()
                loss, lr, grad_norm, examples = self.train_step(step, progress)
                self.train_seconds += time.perf_counter() - start
                progress.update(step, loss, lr, examples / max(time.perf_counter() - start, 1e-9))
                # A skipped update is always logged: the record of a divergence is its bad steps.
                if self._is_due(step, log.every) or self.guard.consecutive_bad:
                    epoch = step / self.steps_per_epoch
                    row = {"step": step, "epoch": round(epoch, 3), "loss": loss, "lr": lr}
                    skipped = self.guard.skipped_steps
                    writer.log(row | {"grad_norm": grad_norm, "skipped_steps": skipped})
                if self.guard.has_diverged:
                    raise LmforgeError(self._divergence_line())
                if self._is_due(step, self.eval_every) and self.evaluate(step, writer, progress):
                    progress.write(f"early stopping at step {step}")
                    break
                if stop.should_stop() and step < self.max_steps:  # a finished run finishes
                    self.stopped_by = stop
                    return self.best
        if "checkpoint" not in self.best:
            raise LmforgeError("no evaluation ran; lower --eval.every")
        return self.best

    def _is_due(self, step: int, every: int) -> bool:
        return step == self.max_steps or (every > 0 and step % every == 0)

    def _divergence_line(self) -> str:
        lr = self.config.train.lr
        return (
            f"fine-tuning diverged at step {self.step}: {self.guard.describe()}; "
            f"{self._kept()}; rerun with a lower --train.lr (now {lr:g}) in a new --run.dir"
        )

    def stop_line(self) -> str:
        """What a stopped run says: where it stopped and what it kept."""
        assert self.stopped_by is not None
        return (
            f"stopped at step {self.step} of {self.max_steps} ({self.stopped_by.signal_name}); "
            f"{self._kept()}; metrics.json is written by finished runs only; fine-tuning cannot "
            "resume a stopped run: rerun the command with a new --run.dir to train again"
        )

    def _kept(self) -> str:
        if "checkpoint" not in self.best:
            return "no evaluation had run, so no checkpoint was kept"
        metric = self.task.metric
        score = self.best["metrics"][metric]
        return (
            f"kept the best checkpoint so far (step {self.best['step']}, {metric} {score:.2f}) "
            "and its predictions"
        )

    def train_step(self, step: int, progress: TrainingProgress) -> tuple[float, float, float, int]:
        """Optimizer step `step` (1-based); returns (loss, lr, gradient norm, examples)."""
        train = self.config.train
        self.model.train()
        indices = self._next_indices(train.batch_size)
        micro = train.micro_batch_size or train.batch_size
        chunks = [indices[start : start + micro] for start in range(0, len(indices), micro)]

        def micro_loss(chunk: list[int], is_last: bool) -> torch.Tensor:
            # Weighted by the chunk's share of the examples: the batch's mean loss in total.
            batch = _to_device(self.task.collate([self.features[i] for i in chunk]), self.device)
            return self.task.loss(self.model, batch) * (len(chunk) / len(indices))

        stats = self.optimizer_step(step - 1, chunks, micro_loss)
        if stats.verdict is Verdict.SKIP:
            progress.write(f"step {step}: update skipped, {self.guard.last_reason}")
        return stats.loss, stats.lr, stats.grad_norm, len(indices)

    def _next_indices(self, count: int) -> list[int]:
        """The next `count` feature indices of a shuffled pass; a new permutation every epoch."""
        out = []
        while len(out) < count:
            if not self.order:
                self.order = list(range(len(self.features)))
                self.rng.shuffle(self.order)
            out.append(self.order.pop())
        return out

    def evaluate(self, step: int, writer: MetricsWriter, progress: TrainingProgress) -> bool:
        """Evaluate; keep the checkpoint if it is the best so far. True: stop early."""
        start = time.perf_counter()
        with self.precision.autocast():
            metrics, rows = self.task.evaluate(
                self.model.eval(), self.validation, self.config.eval.batch_size
            )
        self.model.train()
        writer.log({"step": step, **{f"val_{k}": v for k, v in metrics.items()}})
        score = metrics[self.task.metric]
        summary = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        progress.write(f"step {step}: {summary} ({time.perf_counter() - start:.1f} s)")
        if score > self.best["score"]:
            checkpoint = save_checkpoint(
                self.run_dir, step, self.model, None, {"metrics": metrics},
                to_dict(self.task.model_config), keep_last=1,
            )  # fmt: skip
            self.best = {"score": score, "step": step, "metrics": metrics, "checkpoint": checkpoint}
            write_jsonl(self.run_dir / PREDICTIONS_FILE, rows)
            self.stale_evaluations = 0
            return False
        self.stale_evaluations += 1
        return 0 < self.config.eval.patience <= self.stale_evaluations


def _read_splits(task: Task, config: FinetuneConfig) -> tuple[list, list, list]:
    data = config.data
    train = task.read(data.train)
    if data.validation:
        validation = task.read(data.validation)
    elif data.validation_split > 0:
        train, validation = task.split_validation(train, data.validation_split)
    else:
        raise LmforgeError(
            "no validation data: give --data.validation=FILE or --data.validation_split=0.1"
        )
    test = task.read(data.test) if data.test else []
    if data.max_train_examples:
        train = train[: data.max_train_examples]
    if data.max_eval_examples:
        validation, test = validation[: data.max_eval_examples], test[: data.max_eval_examples]
    if not train or not validation:
        raise LmforgeError("the training or validation split is empty")
    return train, validation, test


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
