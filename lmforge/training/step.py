"""The optimizer step that pretraining (training/trainer.py) and fine-tuning (training/finetune.py)
share: learning rate from the schedule, autocast forward and scaled backward per micro-batch,
unscale and clip, the divergence guard's verdict (training/guard.py), optimizer step through the
grad scaler unless the guard skips it, zero the gradients.

What differs between the two loops is only how a micro-batch's loss is computed and weighted, so
that is the one thing a caller passes in (`micro_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from lmforge.training.guard import DivergenceGuard, Verdict
from lmforge.training.optim import clip_grad_norm
from lmforge.training.precision import Precision
from lmforge.training.schedules import set_lr

MicroBatch = TypeVar("MicroBatch")


@dataclass
class StepStats:
    lr: float
    grad_norm: float
    """L2 norm of the (unscaled) gradients before clipping, averaged over ranks."""
    loss: float
    """The step's loss: the sum of the micro-batch losses, averaged over ranks."""
    verdict: Verdict
    """Whether the update was applied (UPDATE) or skipped (SKIP, OVERFLOW)."""


def _one_process(values: torch.Tensor) -> torch.Tensor:
    return values


class TrainingStep:
    """One optimizer step over micro-batches; holds the optimizer, the schedule and the scaler."""

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[nn.Parameter],
        precision: Precision,
        grad_clip: float | None,
        schedule: Callable[[int], float],
        guard: DivergenceGuard | None = None,
        mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] = _one_process,
    ) -> None:
        """`parameters` are the ones clipped (the bare module's, not a wrapper's); `schedule`
        maps the 0-based optimizer step to its learning rate; `guard` judges each step (default:
        the default guard); `mean_over_ranks` averages a tensor over data-parallel ranks (the
        identity in one process)."""
        self.optimizer = optimizer
        self.parameters = list(parameters)
        self.precision = precision
        self.grad_clip = grad_clip
        self.schedule = schedule
        self.guard = guard or DivergenceGuard()
        self.mean_over_ranks = mean_over_ranks
        self.scaler = precision.grad_scaler()

    def __call__(
        self,
        step: int,
        micro_batches: Sequence[MicroBatch],
        micro_loss: Callable[[MicroBatch, bool], torch.Tensor],
    ) -> StepStats:
        """Run optimizer step `step` (0-based). `micro_loss(batch, is_last)` runs the forward pass
        of one micro-batch and returns the loss to differentiate, already weighted so that the
        gradients of all micro-batches add up to the step's gradient."""
        lr = self.schedule(step)
        set_lr(self.optimizer, lr)
        local_loss = torch.zeros(())
        for index, batch in enumerate(micro_batches):
            with self.precision.autocast():
                loss = micro_loss(batch, index == len(micro_batches) - 1)
            local_loss = local_loss.to(loss.device) + loss.detach().float()
            self.scaler.scale(loss).backward()
        # Clip the true gradients: unscale first (a no-op unless fp16).
        self.scaler.unscale_(self.optimizer)
        grad_norm = clip_grad_norm(self.parameters, self.grad_clip)
        # Both numbers averaged over ranks in one collective: every rank judges the same values,
        # so all skip (or apply) the same updates and the replicas never drift apart.
        shared = torch.stack([local_loss, torch.tensor(grad_norm, device=local_loss.device)])
        loss_value, grad_norm = self.mean_over_ranks(shared).tolist()
        verdict = self.guard.judge(
            loss_value, grad_norm, scaler_handles_overflow=self.scaler.is_enabled()
        )
        if verdict is Verdict.SKIP:
            self._skip_update()
        else:
            # For fp16 the scaler skips the step when a gradient overflowed, and adapts its scale.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(lr=lr, grad_norm=grad_norm, loss=loss_value, verdict=verdict)

    def _skip_update(self) -> None:
        """No optimizer step. The scaler must still close the step it unscaled, but keeps its
        scale and growth count: a NaN or spiking loss says nothing about fp16's range."""
        if self.scaler.is_enabled():
            self.scaler.update(self.scaler.get_scale())
