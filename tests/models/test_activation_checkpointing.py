"""Activation checkpointing per block (models/stacks.py): the same losses and gradients with
dropout on (the recomputation replays the forward pass's dropout masks), and fewer activations
kept for the backward pass.

Memory is measured by a CPU proxy, not a clock or an allocator: the bytes of the tensors autograd
saves for backward during the forward pass, seen through `saved_tensors_hooks` (distinct storages
counted once). Inside a checkpointed block, torch's own hooks keep nothing, so what remains is
what lives outside the blocks (embeddings, head, loss) plus each block's input, held by the
checkpoint itself (added below, as the hooks do not see it)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.model import with_dropout
from lmforge.config.presets import get_preset
from lmforge.models.lm import build_model
from lmforge.models.stacks import Stack, set_activation_checkpointing

PRESETS = ["bert-tiny", "roberta-tiny", "gpt2-tiny", "bloom-tiny", "t5-tiny", "bart-tiny"]
B, T, D = 2, 16, 32


def tiny_config(preset: str):  # noqa: ANN201
    cfg = dataclasses.replace(
        get_preset(preset), vocab_size=64, d_model=D, num_heads=4, num_layers=3, d_ff=4 * D
    )
    if cfg.family == "encoder_decoder":
        cfg = dataclasses.replace(cfg, num_decoder_layers=3)
    return with_dropout(cfg, 0.1)


def batch(cfg) -> dict[str, torch.Tensor]:  # noqa: ANN001
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, cfg.vocab_size, (B, T), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, T - 4 :] = 0  # padding, so the padding-removal layout is checkpointed too
    if cfg.family == "encoder_decoder":
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :8],
                "labels": ids[:, 1:9]}  # fmt: skip
    return {"input_ids": ids, "attention_mask": mask, "labels": ids}


def loss_and_grads(model, inputs, seed: int = 7):  # noqa: ANN001, ANN201
    torch.manual_seed(seed)  # the same dropout draws for both runs
    loss = model(**inputs).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("preset", PRESETS)
def test_checkpointing_leaves_loss_and_every_gradient_unchanged(preset: str) -> None:
    cfg = tiny_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    inputs = batch(cfg)
    plain_loss, plain_grads = loss_and_grads(model, inputs)
    set_activation_checkpointing(model, True)
    loss, grads = loss_and_grads(model, inputs)
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_dropout_is_really_on_so_the_rng_replay_is_tested() -> None:
    cfg = tiny_config("gpt2-tiny")
    model = build_model(cfg).train()
    set_activation_checkpointing(model, True)
    first, _ = loss_and_grads(model, batch(cfg), seed=7)
    second, _ = loss_and_grads(model, batch(cfg), seed=8)
    assert not torch.equal(first, second)


def saved_bytes(model, inputs) -> int:  # noqa: ANN001
    """Bytes of the distinct storages autograd saves during one forward pass."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**inputs).loss.backward()
    return sum(storages.values())


@pytest.mark.parametrize("preset", ["gpt2-tiny", "bert-tiny", "t5-tiny"])
def test_checkpointing_keeps_fewer_activations(preset: str) -> None:
    cfg = dataclasses.replace(tiny_config(preset), vocab_size=16)  # a small head: blocks dominate
    model = build_model(cfg).train()
    inputs = batch(cfg)
    plain = saved_bytes(model, inputs)
    set_activation_checkpointing(model, True)
    checkpointed = saved_bytes(model, inputs)
    num_blocks = sum(len(stack.blocks) for stack in model.modules() if isinstance(stack, Stack))
    block_inputs = num_blocks * B * T * D * 4  # fp32, kept by each checkpoint
    assert checkpointed + block_inputs < plain / 2


def test_evaluation_and_no_grad_forward_are_not_checkpointed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    monkeypatch.setattr(
        "lmforge.models.stacks.checkpoint", lambda *args, **kwargs: calls.append(args)
    )
    cfg = tiny_config("gpt2-tiny")
    model = set_activation_checkpointing(build_model(cfg), True)
    with torch.no_grad():
        model.train()(**batch(cfg))
    model.eval()(**batch(cfg))
    assert calls == []
