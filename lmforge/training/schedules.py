"""Learning-rate schedules as pure functions of the optimizer step.

Because the rate depends on the step alone, resuming needs no scheduler state: the trainer restores
the step and calls `lr_at` again. Warmup is linear (Goyal et al., "Accurate, Large Minibatch SGD");
cosine decay follows Loshchilov & Hutter, "SGDR", without restarts.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Decay = Literal["cosine", "linear", "constant"]


def lr_at(
    step: int,
    *,
    max_lr: float,
    warmup_steps: int,
    max_steps: int,
    decay: Decay = "cosine",
    min_lr_ratio: float = 0.1,
) -> float:
    """Learning rate for optimizer step `step` (0-based: the first update uses `lr_at(0)`).

    Warmup rises linearly to `max_lr`, reached at `step = warmup_steps - 1`; the first step uses
    `max_lr / warmup_steps` rather than 0, so no update is wasted. Decay then runs from `max_lr`
    at `warmup_steps` down to `min_lr_ratio * max_lr` at `max_steps`, and stays there after.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    min_lr = max_lr * min_lr_ratio
    if decay == "constant" or max_steps <= warmup_steps:
        return max_lr
    progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
    if decay == "cosine":
        return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "linear":
        return max_lr - (max_lr - min_lr) * progress
    raise ValueError(f"unknown lr decay {decay!r}; use one of: cosine, linear, constant")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
