"""The divergence guard's verdicts, the optimizer step that obeys them, checkpoints that refuse
NaN, and graceful stop's signal handling (units; the loops are tested in test_divergence.py and
test_graceful_stop.py)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.training.checkpoint import save_checkpoint
from lmforge.training.guard import DivergenceGuard, Verdict, warn_if_lr_is_high
from lmforge.training.optim import build_optimizer
from lmforge.training.precision import Precision
from lmforge.training.step import TrainingStep
from lmforge.training.stopping import GracefulStop

NAN, INF = float("nan"), float("inf")


def _judge(guard: DivergenceGuard, loss: float, grad_norm: float = 1.0, fp16: bool = False):  # noqa: ANN202
    return guard.judge(loss, grad_norm, scaler_handles_overflow=fp16)


@pytest.mark.parametrize(("loss", "grad_norm"), [(NAN, 1.0), (INF, 1.0), (2.0, NAN), (2.0, INF)])
def test_a_non_finite_loss_or_gradient_norm_is_a_bad_step(loss: float, grad_norm: float) -> None:
    guard = DivergenceGuard(max_bad_steps=2)
    assert _judge(guard, loss, grad_norm) is Verdict.SKIP
    assert not guard.has_diverged
    assert _judge(guard, loss, grad_norm) is Verdict.SKIP
    assert guard.has_diverged and guard.skipped_steps == 2
    assert "2 skipped updates in a row" in guard.describe()


def test_a_good_step_ends_the_streak_and_the_count_of_skips_stays() -> None:
    guard = DivergenceGuard(max_bad_steps=2)
    assert [_judge(guard, x) for x in (NAN, 3.0, NAN)] == [
        Verdict.SKIP,
        Verdict.UPDATE,
        Verdict.SKIP,
    ]
    assert guard.consecutive_bad == 1 and guard.skipped_steps == 2 and not guard.has_diverged


def test_an_fp16_overflow_is_the_scalers_and_not_a_bad_step() -> None:
    guard = DivergenceGuard(max_bad_steps=1)
    assert _judge(guard, 2.0, INF, fp16=True) is Verdict.OVERFLOW
    assert not guard.has_diverged and guard.skipped_steps == 1
    assert _judge(guard, NAN, INF, fp16=True) is Verdict.SKIP  # a NaN loss is bad in any precision


def test_a_loss_spike_past_the_factor_is_skipped() -> None:
    guard = DivergenceGuard(max_bad_steps=3, spike_factor=10.0)
    assert _judge(guard, 50.0) is Verdict.UPDATE  # the first loss starts the average
    assert _judge(guard, 2.0) is Verdict.UPDATE  # falling losses never spike
    guard = DivergenceGuard(max_bad_steps=3, spike_factor=10.0)
    for _ in range(10):
        assert _judge(guard, 2.0) is Verdict.UPDATE
    assert _judge(guard, 19.0) is Verdict.UPDATE
    assert _judge(guard, 3e5) is Verdict.SKIP
    assert "spiked past 10x the average 2.3" in guard.last_reason
    assert DivergenceGuard(spike_factor=0).judge(1e9, 1.0, scaler_handles_overflow=False) is (
        Verdict.UPDATE
    )


def test_a_loss_that_grows_a_few_times_per_step_is_caught_as_it_grows() -> None:
    # lr=10: 7.7 -> 3e5 in a few steps, never 10x the step before; the slow average stays low.
    guard = DivergenceGuard(spike_factor=10.0)
    verdicts = [_judge(guard, 7.7 * 3**k) for k in range(8)]
    assert verdicts[:3] == [Verdict.UPDATE] * 3  # 7.7, 23, 69
    assert verdicts[3:] == [Verdict.SKIP] * 5  # 208 and on: past 10x the average ~8.9


def test_near_zero_losses_do_not_count_as_spikes() -> None:
    guard = DivergenceGuard(spike_factor=10.0)
    for _ in range(10):
        _judge(guard, 0.01)
    assert _judge(guard, 0.5) is Verdict.UPDATE  # 50x a tiny mean, but under the 1-nat floor
    assert _judge(guard, 11.0) is Verdict.SKIP


def test_the_guard_state_round_trips_for_exact_resume() -> None:
    guard = DivergenceGuard(max_bad_steps=4)
    for loss in (2.0, 1.5, NAN):
        _judge(guard, loss)
    restored = DivergenceGuard(max_bad_steps=4)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


def test_a_learning_rate_far_above_adamws_range_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_if_lr_is_high(3e-4)
        assert not caplog.records
        warn_if_lr_is_high(10.0)
    assert "train.lr=10 is far above" in caplog.text


# --- the optimizer step ---------------------------------------------------------------------


def _step(model: nn.Module, precision: str = "fp32", max_bad_steps: int = 5) -> TrainingStep:
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, betas=(0.9, 0.999))
    return TrainingStep(
        optimizer=optimizer,
        parameters=model.parameters(),
        precision=Precision(precision, "cpu"),  # skips from_name's device check: fp16 runs on CPU
        grad_clip=1.0,
        schedule=lambda step: 0.1,
        guard=DivergenceGuard(max_bad_steps=max_bad_steps),
    )


def _loss(model: nn.Module, factor: float = 1.0):  # noqa: ANN202
    def micro_loss(batch: torch.Tensor, is_last: bool) -> torch.Tensor:
        return model(batch).float().pow(2).mean() * factor

    return micro_loss


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_nan_loss_leaves_weights_optimizer_and_scaler_untouched(precision: str) -> None:
    model = nn.Linear(4, 2)
    step = _step(model, precision)
    batch = [torch.randn(3, 4)]
    step(0, batch, _loss(model))  # one real step: the optimizer has state
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_state = {k: v.clone() for k, v in step.optimizer.state[model.weight].items()}
    scale = step.scaler.get_scale()
    stats = step(1, batch, _loss(model, NAN))
    assert stats.verdict is Verdict.SKIP and stats.loss != stats.loss  # NaN, reported as such
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(
        torch.equal(optimizer_state[k], v) for k, v in step.optimizer.state[model.weight].items()
    )
    assert step.scaler.get_scale() == scale
    assert all(p.grad is None for p in model.parameters())
    assert step(2, batch, _loss(model)).verdict is Verdict.UPDATE  # the scaler still works


def test_an_fp16_overflow_goes_through_the_scaler() -> None:
    model = nn.Linear(4, 2)
    step = _step(model, "fp16", max_bad_steps=1)
    step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # scaled gradients overflow
    weights = model.weight.detach().clone()
    stats = step(0, [torch.randn(3, 4)], _loss(model))
    assert stats.verdict is Verdict.OVERFLOW and not step.guard.has_diverged
    assert step.scaler.get_scale() == 2.0**99  # lowered by the scaler, as fp16 training needs
    assert torch.equal(model.weight, weights)


# --- checkpoints ----------------------------------------------------------------------------


def test_a_checkpoint_with_nan_weights_is_refused_and_latest_kept(tmp_path: Path) -> None:
    model = nn.Linear(4, 2)
    good = save_checkpoint(tmp_path, 1, model, None, {}, {}, keep_last=1)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(LmforgeError, match=r"refusing to save the checkpoint of step 2: weight "):
        save_checkpoint(tmp_path, 2, model, None, {}, {}, keep_last=1)
    assert (tmp_path / "checkpoints" / "LATEST").read_text().strip() == good.name
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", good.name]


def test_a_checkpoint_with_a_non_finite_optimizer_state_is_refused(tmp_path: Path) -> None:
    model = nn.Linear(4, 2)
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, betas=(0.9, 0.999))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    optimizer.state[model.weight]["exp_avg_sq"][0, 0] = float("inf")
    with pytest.raises(LmforgeError, match=r"optimizer\.state\..*exp_avg_sq holds NaN or inf"):
        save_checkpoint(tmp_path, 1, model, optimizer, {}, {}, keep_last=1)
    assert not (tmp_path / "checkpoints" / "LATEST").exists()


# --- graceful stop --------------------------------------------------------------------------


def test_sigterm_and_a_first_ctrl_c_request_a_stop_a_second_ctrl_c_stops_at_once() -> None:
    previous = signal.getsignal(signal.SIGINT)
    with GracefulStop() as stop:
        assert not stop.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.should_stop() and stop.exit_code == 143 and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM changes nothing
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.should_stop() and stop.exit_code == 130


def test_the_stop_decision_is_what_the_ranks_agree() -> None:
    with GracefulStop(agree=lambda flag: True) as stop:  # another rank received the signal
        assert stop.should_stop() and stop.exit_code == 143
