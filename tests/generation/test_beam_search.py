"""Decoder-only beam search: equal to transformers' `generate(num_beams=...)` on left-padded
prompts, and the same with and without the KV cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.generation.search import BeamConfig, beam_search, left_pad
from lmforge.models.lm import build_model

EOS = 1


def tiny_decoder(preset: str):
    cfg = dataclasses.replace(
        get_preset(preset), vocab_size=64, d_model=32, num_heads=4, num_layers=2, d_ff=128
    )
    model = build_model(cfg)
    with torch.no_grad():  # a peaked output so that beams finish at different lengths
        model.token_embed.weight.mul_(6)
    return model


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    rows = [torch.randint(2, 64, (n,)).tolist() for n in (7, 4, 1)]
    return left_pad(rows, pad_id=0)


@pytest.mark.parametrize("preset", ["gpt2-tiny", "bloom-tiny"])
@pytest.mark.parametrize(
    ("length_penalty", "early_stopping", "no_repeat"), [(1.0, False, 0), (0.6, True, 2)]
)
def test_decoder_beam_search_equals_transformers_generate(
    preset: str, length_penalty: float, early_stopping: bool, no_repeat: int
) -> None:
    pytest.importorskip("transformers")
    from lmforge.interop.hf import build_hf_model

    model = tiny_decoder(preset)
    hf_model = build_hf_model(model.config, model.state_dict())
    ids, mask = prompts()
    beam = BeamConfig(
        num_beams=4, max_new_tokens=10, length_penalty=length_penalty,
        early_stopping=early_stopping, no_repeat_ngram_size=no_repeat,
    )  # fmt: skip
    ours = beam_search(model, ids, attention_mask=mask, beam=beam, eos_id=EOS, pad_id=0)
    theirs = hf_model.generate(
        input_ids=ids, attention_mask=mask, num_beams=4, max_new_tokens=10,
        length_penalty=length_penalty, early_stopping=early_stopping,
        no_repeat_ngram_size=no_repeat, do_sample=False, eos_token_id=EOS, pad_token_id=0,
    )  # fmt: skip
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("preset", ["gpt2-tiny", "bloom-tiny"])
def test_decoder_beam_search_with_cache_equals_without(preset: str) -> None:
    model = tiny_decoder(preset)
    ids, mask = prompts()
    kwargs = dict(attention_mask=mask, beam=BeamConfig(num_beams=3, max_new_tokens=8), eos_id=EOS)
    cached = beam_search(model, ids, pad_id=0, **kwargs)
    assert torch.equal(cached, beam_search(model, ids, pad_id=0, use_cache=False, **kwargs))
    assert torch.equal(cached[:, : ids.shape[1]], ids)
