"""A tiny T5 and a tiny BART overfit one batch of their own objective (trainer integration of
these objectives is still to come: issue 4, step 4)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.models.lm import build_model
from lmforge.objectives.denoising import BartDenoising
from lmforge.objectives.span_corruption import SpanCorruption
from lmforge.training.optim import build_optimizer

VOCAB = 128
T5_TOKENIZER = SimpleNamespace(eos_id=1, pad_id=0, sentinel_ids=list(range(127, 27, -1)))
BART_TOKENIZER = SimpleNamespace(bos_id=0, pad_id=1, eos_id=2, mask_id=3, separator_id=2)


@pytest.mark.parametrize("preset", ["t5-tiny", "bart-tiny"])
def test_tiny_seq2seq_model_overfits_one_batch(preset: str) -> None:
    cfg = dataclasses.replace(
        get_preset(preset), vocab_size=VOCAB, d_model=32, num_heads=4, num_layers=2,
        num_decoder_layers=2, d_ff=64,
    )  # fmt: skip
    model = build_model(cfg)
    if preset.startswith("t5"):
        objective = SpanCorruption(T5_TOKENIZER, "test")
    else:
        objective = BartDenoising(BART_TOKENIZER, "test", sentence_permutation=False)
    windows = torch.randint(4, 28, (4, objective.raw_length(32)))
    batch = objective.make_batch(windows, torch.Generator().manual_seed(0))
    optimizer = build_optimizer(model, lr=3e-3, weight_decay=0.0, betas=(0.9, 0.95))
    for _ in range(200):
        output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert output.loss.item() < 0.05
