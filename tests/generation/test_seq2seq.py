"""Encoder-decoder generation: cache equivalence, beam search against greedy and transformers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.generation.search import (
    BeamConfig,
    SamplingConfig,
    beam_search_seq2seq,
    generate_seq2seq,
)
from lmforge.models.lm import build_model

EOS = 1


def tiny_model(preset: str):
    cfg = dataclasses.replace(
        get_preset(preset), vocab_size=64, d_model=32, num_heads=4, num_layers=2,
        num_decoder_layers=2, d_ff=64,
    )  # fmt: skip
    return build_model(cfg)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(2, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row
    return ids, mask


@pytest.mark.parametrize("preset", ["t5-tiny", "bart-tiny"])
def test_cached_and_uncached_decoding_agree_token_for_token(preset: str) -> None:
    model = tiny_model(preset)
    ids, mask = inputs()
    sampling = SamplingConfig(max_new_tokens=12, temperature=0)
    cached = generate_seq2seq(
        model, ids, attention_mask=mask, sampling=sampling, decoder_start_id=0
    )
    full = generate_seq2seq(
        model, ids, attention_mask=mask, sampling=sampling, decoder_start_id=0, use_cache=False
    )
    assert cached.shape == (3, 13)
    assert torch.equal(cached, full)
    beam = BeamConfig(num_beams=3, max_new_tokens=8)
    kwargs = dict(attention_mask=mask, beam=beam, decoder_start_id=0, eos_id=EOS, pad_id=0)
    assert torch.equal(
        beam_search_seq2seq(model, ids, **kwargs),
        beam_search_seq2seq(model, ids, use_cache=False, **kwargs),
    )


def test_sampling_is_reproducible_with_a_seeded_generator() -> None:
    model = tiny_model("t5-tiny")
    ids, mask = inputs()
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, top_k=10)
    runs = [
        generate_seq2seq(
            model, ids, sampling=sampling, decoder_start_id=0,
            generator=torch.Generator().manual_seed(3),
        )
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(*runs)


def test_beam_search_with_one_beam_equals_greedy() -> None:
    model = tiny_model("bart-tiny")
    ids, mask = inputs()
    greedy = generate_seq2seq(
        model, ids, attention_mask=mask, sampling=SamplingConfig(max_new_tokens=10, temperature=0),
        decoder_start_id=EOS,
    )  # fmt: skip
    beam = beam_search_seq2seq(
        model, ids, attention_mask=mask, beam=BeamConfig(num_beams=1, max_new_tokens=10),
        decoder_start_id=EOS, eos_id=99, pad_id=0,
    )  # fmt: skip
    assert torch.equal(beam, greedy)


@pytest.mark.parametrize(
    ("length_penalty", "early_stopping", "no_repeat"), [(1.0, False, 0), (0.6, True, 2)]
)
def test_beam_search_equals_transformers_generate(
    length_penalty: float, early_stopping: bool, no_repeat: int
) -> None:
    pytest.importorskip("transformers")
    from lmforge.interop.hf import build_hf_model

    model = tiny_model("t5-tiny")
    with torch.no_grad():  # a peaked output so that beams finish at different lengths
        model.lm_head.weight.mul_(8)
    hf_model = build_hf_model(model.config, model.state_dict())
    ids = torch.randint(2, 64, (2, 7))
    beam = BeamConfig(
        num_beams=4, max_new_tokens=12, length_penalty=length_penalty,
        early_stopping=early_stopping, no_repeat_ngram_size=no_repeat,
    )  # fmt: skip
    ours = beam_search_seq2seq(model, ids, beam=beam, decoder_start_id=0, eos_id=EOS, pad_id=0)
    theirs = hf_model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=4, max_new_tokens=12,
        length_penalty=length_penalty, early_stopping=early_stopping,
        no_repeat_ngram_size=no_repeat, do_sample=False, eos_token_id=EOS, pad_token_id=0,
        decoder_start_token_id=0,
    )  # fmt: skip
    assert torch.equal(ours, theirs)


def test_fewer_than_one_beam_is_one_clear_error() -> None:
    with pytest.raises(LmforgeError, match="--num-beams must be at least 1"):
        BeamConfig(num_beams=0)
