"""The divergence guard: judge each optimizer step before its update is applied.

    loss not finite                      -> skip the update (a bad step)
    gradient norm not finite             -> fp16: the grad scaler's overflow (it skips and lowers
                                            its scale; counted, not bad); otherwise a bad step
    loss > spike_factor x loss average   -> skip the update (a bad step)
    otherwise                            -> update; the loss joins the average

`max_bad_steps` bad steps in a row and the run has diverged: the caller stops or rolls back
(training/trainer.py, training/finetune.py). A skipped step still counts as a step: the data order,
dropout and learning rate stay pure functions of the step, so resuming stays exact, and the batch
of a skipped step is not retried. The guard's state goes into every checkpoint for the same reason.

Skipping the batches around a loss spike is what PaLM did at scale (Chowdhery et al. 2022, 5.1);
here it also stops non-finite values from ever reaching the weights, the optimizer state or the
grad scaler. The judgement uses numbers all ranks share (the loss and gradient norm averaged over
ranks), so every rank reaches the same verdict without a further collective.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Any

logger = logging.getLogger(__name__)

_AVERAGE_DECAY = 0.98
"""The spike test's reference is an exponential moving average of the accepted losses (memory of
about 50 steps) started at the first one. A window mean would be too short at the start: a run
whose learning rate is far too high grows its loss a few times per step from step 2 on, and the
mean of the last few steps follows it up; the slow average stays near the first losses."""
_SPIKE_FLOOR = 1.0
"""Nats: a mean below it counts as 1 in the spike test. Near-zero losses (a fine-tuned classifier
at 0.01) jump tenfold on one hard batch; that is noise, not divergence."""
_HIGH_LR = 0.1
"""Learning rates above this are far outside what AdamW trains transformers with."""


class Verdict(enum.Enum):
    UPDATE = "update"
    """Apply the update."""
    SKIP = "skip"
    """A bad step: no update, nothing reaches the optimizer or the grad scaler."""
    OVERFLOW = "overflow"
    """fp16 gradients overflowed: the grad scaler skips the update and lowers its scale."""


class DivergenceGuard:
    """Counts skipped and consecutive bad steps and keeps the recent losses of one run."""

    def __init__(self, *, max_bad_steps: int = 5, spike_factor: float = 10.0) -> None:
        self.max_bad_steps = max_bad_steps
        self.spike_factor = spike_factor
        self.loss_average: float | None = None
        """Of the accepted losses; None before the first."""
        self.consecutive_bad = 0
        self.skipped_steps = 0
        """Updates not applied in the whole run (bad steps and fp16 overflows)."""
        self.last_reason = ""
        """Why the latest bad step was bad, for the user."""

    def judge(self, loss: float, grad_norm: float, *, scaler_handles_overflow: bool) -> Verdict:
        """The verdict on a step with this (rank-averaged) loss and gradient norm."""
        reason = self._why_bad(loss, grad_norm, scaler_handles_overflow)
        if reason is not None:
            self.consecutive_bad += 1
            self.skipped_steps += 1
            self.last_reason = reason
            return Verdict.SKIP
        if not math.isfinite(grad_norm):
            self.skipped_steps += 1
            return Verdict.OVERFLOW
        self.consecutive_bad = 0
        average = self.loss_average
        self.loss_average = (
            loss if average is None else _AVERAGE_DECAY * average + (1 - _AVERAGE_DECAY) * loss
        )
        return Verdict.UPDATE

    def _why_bad(self, loss: float, grad_norm: float, scaler_handles_overflow: bool) -> str | None:
        if not math.isfinite(loss):
            return f"loss is {loss}"
        if not math.isfinite(grad_norm) and not scaler_handles_overflow:
            return f"gradient norm is {grad_norm}"
        average = self.loss_average
        if self.spike_factor and average is not None:
            if loss > self.spike_factor * max(average, _SPIKE_FLOOR):
                return (
                    f"loss {loss:.4g} spiked past {self.spike_factor:g}x the average {average:.4g}"
                )
        return None

    @property
    def has_diverged(self) -> bool:
        """max_bad_steps bad steps in a row."""
        return self.consecutive_bad >= self.max_bad_steps

    def describe(self) -> str:
        """The divergence in words, e.g. '5 skipped updates in a row (last: loss is nan)'."""
        count = self.consecutive_bad
        plural = "s" if count != 1 else ""
        return f"{count} skipped update{plural} in a row (last: {self.last_reason})"

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, saved with every checkpoint so a resumed run judges alike."""
        return {
            "loss_average": self.loss_average,
            "consecutive_bad": self.consecutive_bad,
            "skipped_steps": self.skipped_steps,
            "last_reason": self.last_reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_average = state.get("loss_average")
        self.consecutive_bad = int(state.get("consecutive_bad", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.last_reason = str(state.get("last_reason", ""))


def warn_if_lr_is_high(lr: float, key: str = "train.lr") -> None:
    """Say when a learning rate is far outside AdamW's usual range: the run will most likely
    diverge, and the guard will then stop it; better to hear it before the first step."""
    if lr > _HIGH_LR:
        logger.warning(
            "%s=%g is far above what AdamW trains transformers with (1e-5 to 1e-2); expect the "
            "loss to diverge (the divergence guard then skips updates and stops the run)",
            key,
            lr,
        )
