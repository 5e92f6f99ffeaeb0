"""`hidden_states`: one call gives the states a task head reads, for every model class."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.models.lm import build_model

PRESETS = ["bert-tiny", "roberta-tiny", "gpt2-tiny", "bloom-tiny", "t5-tiny", "bart-tiny"]


def _model(preset: str) -> torch.nn.Module:
    cfg = dataclasses.replace(get_preset(preset), vocab_size=96, d_model=32, num_heads=4)
    return build_model(cfg).eval()


@pytest.mark.parametrize("preset", PRESETS)
def test_the_same_call_works_for_every_family(preset: str) -> None:
    model = _model(preset)
    ids = torch.randint(5, 96, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    hidden = model.hidden_states(ids, attention_mask=mask, segment_ids=torch.zeros_like(ids))
    assert hidden.shape == (2, 7, 32)
    torch.testing.assert_close(hidden, model.hidden_states(ids, attention_mask=mask))


@pytest.mark.parametrize("preset", ["t5-tiny", "bart-tiny"])
def test_encoder_decoders_give_their_encoder_states(preset: str) -> None:
    model = _model(preset)
    ids, start = torch.randint(5, 96, (2, 7)), torch.zeros(2, 1, dtype=torch.long)
    memory = model.hidden_states(ids)
    reused = model(decoder_input_ids=start, memory=memory).logits
    torch.testing.assert_close(reused, model(ids, decoder_input_ids=start).logits)


def test_segment_ids_are_read_by_models_with_two_segment_types() -> None:
    model, ids = _model("bert-tiny"), torch.randint(5, 96, (1, 6))
    segments = torch.tensor([[0, 0, 0, 1, 1, 1]])
    assert not torch.allclose(
        model.hidden_states(ids, segment_ids=segments), model.hidden_states(ids)
    )
    decoder = _model("gpt2-tiny")  # no segment embeddings: the ids are ignored
    torch.testing.assert_close(
        decoder.hidden_states(ids, segment_ids=segments), decoder.hidden_states(ids)
    )
