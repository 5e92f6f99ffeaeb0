"""Shape of the learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from lmforge.training.schedules import lr_at, set_lr

MAX_LR, WARMUP, MAX_STEPS = 1e-3, 10, 100


def _lr(step: int, decay: str) -> float:
    return lr_at(step, max_lr=MAX_LR, warmup_steps=WARMUP, max_steps=MAX_STEPS, decay=decay)


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_warmup_starts_small_and_peaks_at_max_lr(decay: str) -> None:
    assert _lr(0, decay) == pytest.approx(MAX_LR / WARMUP)
    warmup = [_lr(s, decay) for s in range(WARMUP)]
    assert warmup == sorted(warmup)
    assert _lr(WARMUP - 1, decay) == pytest.approx(MAX_LR)
    assert _lr(WARMUP, decay) == pytest.approx(MAX_LR)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_is_monotone_down_to_min_lr(decay: str) -> None:
    after = [_lr(s, decay) for s in range(WARMUP, MAX_STEPS + 20)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert _lr(MAX_STEPS, decay) == pytest.approx(0.1 * MAX_LR)
    assert _lr(MAX_STEPS + 50, decay) == pytest.approx(0.1 * MAX_LR)


def test_cosine_is_halfway_at_midpoint() -> None:
    mid = WARMUP + (MAX_STEPS - WARMUP) // 2
    assert _lr(mid, "cosine") == pytest.approx(0.55 * MAX_LR)


def test_constant_stays_at_max_lr() -> None:
    assert _lr(MAX_STEPS + 5, "constant") == MAX_LR


def test_no_warmup_starts_at_max_lr() -> None:
    assert lr_at(0, max_lr=1.0, warmup_steps=0, max_steps=10) == 1.0


def _bert_finetuning_lr(step: int, max_lr: float, warmup: int, total: int) -> float:
    """The fine-tuning loop's own schedule before it used `lr_at` (BERT's: linear warmup, then
    linear decay to 0 at `total`), kept here as the reference."""
    if step < warmup:
        return max_lr * ((step + 1) / warmup)
    return max_lr * max(0.0, (total - step) / max(1, total - warmup))


@pytest.mark.parametrize(
    ("max_lr", "total", "warmup_ratio"),
    [(2e-5, 1, 0.1), (3e-5, 97, 0.1), (5e-5, 300, 0.06), (1e-4, 40, 0.0)],
)
def test_linear_decay_to_zero_is_berts_finetuning_schedule(
    max_lr: float, total: int, warmup_ratio: float
) -> None:
    warmup = int(warmup_ratio * total)
    ours = [lr_at(s, max_lr=max_lr, warmup_steps=warmup, max_steps=total, decay="linear",
                  min_lr_ratio=0.0) for s in range(total)]  # fmt: skip
    reference = [_bert_finetuning_lr(s, max_lr, warmup, total) for s in range(total)]
    # Equal up to rounding: the two formulas group the same products differently (<= 1e-13).
    assert ours == pytest.approx(reference, rel=1e-12, abs=0.0)


def test_unknown_decay_is_rejected() -> None:
    with pytest.raises(ValueError, match="cosine, linear, constant"):
        _lr(50, "exponential")


def test_set_lr_sets_every_group() -> None:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=1.0)
    set_lr(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]
