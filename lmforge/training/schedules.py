"""Learning-rate schedules as pure functions of the optimizer step.

Because the rate depends on the step alone, resuming needs no scheduler state: the trainer restores
the step and calls `lr_at` again. Warmup is linear (Goyal et al., "Accurate, Large Minibatch SGD");
cosine decay follows Loshchilov & Hutter, "SGDR", without restarts. Warmup-stable-decay (WSD) holds
the peak rate and cools down over the last `decay_fraction` of the steps (Hägele et al. 2024,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"; Hu et al. 2024,
MiniCPM): until the cooldown starts the rate does not depend on `max_steps`, so a run resumed from
its stable phase with a larger `max_steps` goes on exactly as if it had been planned that long.

    max_lr     .--------------------------------.
              /      stable: lr does not        `.    cooldown: linear or 1-sqrt
             /       depend on max_steps          `.
    min_lr  / warmup                                 `--
           0     warmup_steps      max_steps * (1 - decay_fraction)     max_steps
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Decay = Literal["cosine", "linear", "constant", "wsd"]
Cooldown = Literal["linear", "1-sqrt"]


def lr_at(
    step: int,
    *,
    max_lr: float,
    warmup_steps: int,
    max_steps: int,
    decay: Decay = "cosine",
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
    cooldown: Cooldown = "linear",
) -> float:
    """Learning rate for optimizer step `step` (0-based: the first update uses `lr_at(0)`).

    Warmup rises linearly to `max_lr`, reached at `step = warmup_steps - 1`; the first step uses
    `max_lr / warmup_steps` rather than 0, so no update is wasted. Decay then runs from `max_lr`
    at `warmup_steps` (wsd: at `wsd_decay_start`) down to `min_lr_ratio * max_lr` at `max_steps`,
    and stays there after. `decay_fraction` and `cooldown` shape wsd only.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    min_lr = max_lr * min_lr_ratio
    if decay == "constant" or max_steps <= warmup_steps:
        return max_lr
    if decay == "wsd":
        start = wsd_decay_start(warmup_steps, max_steps, decay_fraction)
        if step <= start:
            return max_lr
        progress = min(1.0, (step - start) / max(1, max_steps - start))
        return min_lr + (max_lr - min_lr) * _cooldown(progress, cooldown)
    progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
    if decay == "cosine":
        return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "linear":
        return max_lr - (max_lr - min_lr) * progress
    raise ValueError(f"unknown lr decay {decay!r}; use one of: cosine, linear, constant, wsd")


def wsd_decay_start(warmup_steps: int, max_steps: int, decay_fraction: float) -> int:
    """The first step of WSD's cooldown, whose rate is still `max_lr`: max_steps * (1 -
    decay_fraction), rounded, and never inside the warmup. A checkpoint at this step or before
    is one a longer run can continue from."""
    return max(warmup_steps, round(max_steps * (1.0 - decay_fraction)))


def _cooldown(progress: float, cooldown: Cooldown) -> float:
    """Where WSD is between min_lr (0) and max_lr (1) at `progress` in [0, 1] of the cooldown."""
    if cooldown == "linear":
        return 1.0 - progress
    if cooldown == "1-sqrt":
        # Hägele et al.'s (1 - sqrt) cooldown stays near the peak for longer than linear and drops
        # steeply at the end; they measure it slightly better than linear at equal length.
        return 1.0 - math.sqrt(progress)
    raise ValueError(f"unknown wsd cooldown {cooldown!r}; use one of: linear, 1-sqrt")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group to `lr` times the group's `lr_scale` (1 when
    it has none: every AdamW group). A group whose peak rate differs from the schedule's (Muon's
    `optim.muon_lr`) carries the ratio, so one schedule drives every group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
