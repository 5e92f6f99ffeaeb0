"""Muon with AdamW as one optimizer: which parameters go where, the lr schedule's groups, the
state round trip, the fp16 grad scaler, and the one-line refusals."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from torch import nn

from lmforge.config.loading import load_run_config
from lmforge.config.schema import OptimSection
from lmforge.errors import LmforgeError
from lmforge.models.lm import build_model
from lmforge.training.muon import MuonWithAdamW
from lmforge.training.optim import build_optimizer
from lmforge.training.schedules import set_lr

TINY = ["--model.d_model=32", "--model.num_heads=2", "--model.num_layers=2", "--model.d_ff=64",
        "--model.vocab_size=64", "--run.dir=-", "--data.path=-"]  # fmt: skip
MUON = OptimSection(kind="muon")


def tiny_model(preset: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(load_run_config(preset, TINY).model)


def muon_optimizer(model: nn.Module, **optim: object) -> MuonWithAdamW:
    optimizer = build_optimizer(
        model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95),
        optim=dataclasses.replace(MUON, **optim),
    )  # fmt: skip
    assert isinstance(optimizer, MuonWithAdamW)
    return optimizer


def names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


@pytest.mark.parametrize("preset", ["gpt2-tiny", "t5-tiny"])
def test_hidden_matrices_take_muon_and_the_rest_adamw(preset: str) -> None:
    model = tiny_model(preset)
    optimizer = muon_optimizer(model)
    muon = names(model, optimizer.muon.param_groups[0]["params"])
    decay, no_decay = (names(model, g["params"]) for g in optimizer.adamw.param_groups)

    assert muon == {
        name
        for name, p in model.named_parameters()
        if ".blocks." in name and name.endswith("weight") and p.ndim == 2
    }
    assert all(name.endswith("proj.weight") for name in muon)
    # The embedding (tied to GPT-2's head), the positions and every vector stay with AdamW; T5's
    # untied head is a matrix but no hidden one: AdamW with weight decay.
    assert "token_embed.weight" in no_decay
    assert decay == ({"lm_head.weight"} if preset == "t5-tiny" else set())
    every = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))
    assert muon.isdisjoint(decay | no_decay)


def test_adamw_kind_builds_the_plain_adamw() -> None:
    optimizer = build_optimizer(
        tiny_model("gpt2-tiny"), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), optim=OptimSection()
    )
    assert type(optimizer) is torch.optim.AdamW
    set_lr(optimizer, 0.123456789e-3)
    # Bit for bit the rate the schedule gave: AdamW runs are what they were before Muon.
    assert [g["lr"] for g in optimizer.param_groups] == [0.123456789e-3] * 2


def test_schedule_scales_the_muon_group_by_its_own_peak() -> None:
    optimizer = muon_optimizer(tiny_model("gpt2-tiny"), muon_lr=4e-2)
    set_lr(optimizer, 5e-3)  # half the peak of 1e-2
    assert [g["lr"] for g in optimizer.param_groups] == [5e-3, 5e-3, pytest.approx(2e-2)]
    assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(2e-2)


def _train(model: nn.Module, optimizer: MuonWithAdamW, steps: range) -> None:
    for step in steps:
        ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(step))
        loss = model(ids[:, :-1], labels=ids[:, 1:]).loss_sum
        set_lr(optimizer, 1e-2 * (1 - step / 10))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _round_trip(state: dict) -> dict:
    """Through torch.save and the weights-only load that checkpoints use."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_round_trip_resumes_bit_for_bit() -> None:
    straight = tiny_model("gpt2-tiny")
    _train(straight, muon_optimizer(straight), range(6))

    first = tiny_model("gpt2-tiny")
    optimizer = muon_optimizer(first)
    _train(first, optimizer, range(3))
    weights, state = _round_trip(first.state_dict()), _round_trip(optimizer.state_dict())
    assert len(state["muon"]["state"]) == len(optimizer.muon.param_groups[0]["params"])

    resumed = tiny_model("gpt2-tiny")
    resumed.load_state_dict(weights)
    optimizer = muon_optimizer(resumed)
    optimizer.load_state_dict(state)
    _train(resumed, optimizer, range(3, 6))
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_changed_muon_lr_takes_effect_on_resume() -> None:
    model = tiny_model("gpt2-tiny")
    saved = muon_optimizer(model).state_dict()
    optimizer = muon_optimizer(model, muon_lr=3e-2)
    optimizer.load_state_dict(saved)
    set_lr(optimizer, 1e-2)
    assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(3e-2)


def test_adamw_state_is_refused_by_muon() -> None:
    model = tiny_model("gpt2-tiny")
    adamw = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    with pytest.raises(ValueError, match="--optim.kind=adamw"):
        muon_optimizer(model).load_state_dict(adamw.state_dict())


def test_grad_scaler_unscales_and_skips_overflowing_steps() -> None:
    model = tiny_model("gpt2-tiny")
    reference = tiny_model("gpt2-tiny")
    scaled, plain = muon_optimizer(model), muon_optimizer(reference)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    ids = torch.randint(0, 64, (2, 9))
    scaler.scale(model(ids[:, :-1], labels=ids[:, 1:]).loss_sum).backward()
    scaler.unscale_(scaled)
    scaler.step(scaled)
    scaler.update()
    reference(ids[:, :-1], labels=ids[:, 1:]).loss_sum.backward()
    plain.step()
    # A power-of-two scale unscales exactly: the same update as without the scaler.
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)

    before = [p.detach().clone() for p in model.parameters()]
    scaled.zero_grad()
    scaler.scale(model(ids[:, :-1], labels=ids[:, 1:]).loss_sum * float("inf")).backward()
    scaler.step(scaled)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 2.0**9


def test_muon_without_transformer_blocks_is_a_clear_error() -> None:
    with pytest.raises(LmforgeError, match="--optim.kind=adamw"):
        build_optimizer(nn.Linear(4, 4), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.95), optim=MUON)


@pytest.mark.parametrize(
    ("override", "message"),
    [("--optim.kind=sgd", "choose one of adamw, muon"),
     ("--optim.muon_momentum=1", "optim.muon_momentum must be in"),
     ("--optim.muon_lr=0", "optim.muon_lr must be > 0")],
)  # fmt: skip
def test_bad_optim_keys_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(LmforgeError, match=message):
        load_run_config("gpt2-tiny", [*TINY, override])
