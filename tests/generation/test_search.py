"""Decoding: the KV cache changes speed, never tokens; sampling filters do what they say."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.generation.search import SamplingConfig, choose_next_token, generate, left_pad
from lmforge.models.lm import build_model


def tiny_decoder(name: str):
    cfg = dataclasses.replace(
        get_preset(name), vocab_size=64, d_model=32, num_heads=4, num_layers=2, d_ff=64
    )
    return build_model(cfg).eval()


@pytest.mark.parametrize("name", ["gpt2-tiny", "bloom-tiny"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_with_cache_equals_without(name: str, temperature: float) -> None:
    model = tiny_decoder(name)
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11]], pad_id=0)  # left padding in row 2
    sampling = SamplingConfig(max_new_tokens=12, temperature=temperature, top_k=20)
    outputs = [
        generate(
            model,
            ids,
            attention_mask=mask,
            sampling=sampling,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(3),
        )
        for use_cache in (True, False)
    ]
    assert torch.equal(outputs[0], outputs[1])


def test_left_padding_gives_the_same_continuation_as_the_prompt_alone() -> None:
    model = tiny_decoder("gpt2-tiny")
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    alone = generate(model, torch.tensor([[10, 11]]), sampling=greedy)
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11]], pad_id=0)
    batched = generate(model, ids, attention_mask=mask, sampling=greedy)
    assert batched[1, -6:].tolist() == alone[0, -6:].tolist()


def test_generation_stops_when_every_row_produced_eos() -> None:
    model = tiny_decoder("gpt2-tiny")
    greedy = SamplingConfig(max_new_tokens=20, temperature=0)
    first = generate(model, torch.tensor([[1, 2, 3]]), sampling=greedy)[0, 3].item()
    stopped = generate(model, torch.tensor([[1, 2, 3]]), sampling=greedy, eos_id=first)
    assert stopped.shape[1] == 4


def test_top_k_and_top_p_keep_only_the_likely_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    top_k = {
        choose_next_token(logits, SamplingConfig(top_k=2), generator).item() for _ in range(200)
    }
    top_p = {
        choose_next_token(logits, SamplingConfig(top_p=0.7), generator).item() for _ in range(200)
    }
    assert top_k == {0, 1}
    assert top_p == {0, 1}


def test_generation_beyond_learned_positions_is_refused() -> None:
    model = tiny_decoder("gpt2-tiny")  # 256 learned positions
    with pytest.raises(ValueError, match="exceeds the model's 256 positions"):
        generate(
            model, torch.ones(1, 250, dtype=torch.long), sampling=SamplingConfig(max_new_tokens=10)
        )
