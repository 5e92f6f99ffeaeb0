"""Masked language modeling: masking statistics, special tokens, whole words, dynamic masking,
framing, a tiny BERT that overfits, and the bad inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.config.schema import ObjectiveSection
from lmforge.data.tokenizer import train_tokenizer
from lmforge.errors import LmforgeError
from lmforge.models.heads import IGNORE_INDEX
from lmforge.models.lm import build_model
from lmforge.objectives.base import build_objective
from lmforge.objectives.mlm import MaskedLM, special_token_table
from lmforge.training.optim import build_optimizer

TEXT = (
    "The capital of France is Paris. Unbelievably, the quick brown foxes were jumping over "
    "lazy dogs while mathematicians recomputed everything! Tokenization splits uncommon words. "
)


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def tokenizer(request: pytest.FixtureRequest):
    documents = [TEXT * 3, TEXT.upper(), TEXT.lower()] * 20
    return train_tokenizer(request.param, 320, documents)


def masked_lm(tokenizer, **settings) -> MaskedLM:
    return MaskedLM(ObjectiveSection(kind="mlm", **settings), tokenizer, "test data")


def random_tokens(tokenizer, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Non-special tokens with a special token (separator, padding, ...) every 7th position."""
    pool = (~special_token_table(tokenizer)).nonzero().squeeze(1)
    tokens = pool[torch.randint(pool.numel(), shape, generator=generator)]
    specials = special_token_table(tokenizer).nonzero().squeeze(1)
    tokens[:, ::7] = specials[torch.arange(tokens[:, ::7].numel()) % specials.numel()].view(
        tokens.shape[0], -1
    )
    return tokens


@pytest.mark.parametrize("mask_rate", [0.15, 0.3])
def test_masking_statistics_match_the_configuration(tokenizer, mask_rate: float) -> None:
    objective = masked_lm(tokenizer, mask_rate=mask_rate)
    generator = torch.Generator().manual_seed(1)
    tokens = random_tokens(tokenizer, (400, 128), generator)
    input_ids, labels = objective.mask(tokens, generator)
    special = special_token_table(tokenizer)[tokens]
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()  # never a special token (padding, separators, ...)
    assert torch.equal(input_ids[special], tokens[special])
    assert torch.equal(labels[selected], tokens[selected])
    assert torch.equal(input_ids[~selected], tokens[~selected])
    # Binomial bounds at 5 standard deviations: a false failure once in ~3.5 million runs.
    candidates = (~special).sum().item()
    rate = selected.sum().item() / candidates
    assert abs(rate - mask_rate) < 5 * (mask_rate * (1 - mask_rate) / candidates) ** 0.5
    n = selected.sum().item()
    masked = (input_ids[selected] == tokenizer.mask_id).float().mean().item()
    unchanged = (input_ids[selected] == tokens[selected]).float().mean().item()
    # Random replacements that happen to draw the original token count as unchanged: 1 / pool.
    pool = (~special_token_table(tokenizer)).sum().item()
    random_share = 1 - masked - unchanged
    assert abs(masked - 0.8) < 5 * (0.16 / n) ** 0.5
    assert abs(random_share - 0.1 * (1 - 1 / pool)) < 5 * (0.09 / n) ** 0.5
    assert abs(unchanged - 0.1 * (1 + 1 / pool)) < 5 * (0.09 / n) ** 0.5
    assert (
        not special_token_table(tokenizer)[input_ids[selected]]
        .logical_and(input_ids[selected] != tokenizer.mask_id)
        .any()
    )  # random tokens come from the non-special vocabulary


def _words(tokenizer, ids: list[int]) -> list[list[int]]:
    """Positions grouped into words, from the tokenizer's own word ids."""
    encoding = tokenizer.inner.encode(tokenizer.decode(ids), add_special_tokens=False)
    assert encoding.ids == ids
    groups: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids):
        groups.setdefault(word, []).append(position)
    return list(groups.values())


def test_whole_word_masking_keeps_words_whole(tokenizer) -> None:
    objective = masked_lm(tokenizer, mask_rate=0.3, whole_word_masking=True)
    ids = tokenizer.encode("parisian capitalization brownish lazily jumpingfoxes " * 4)
    tokens = torch.tensor([ids] * 200)
    _, labels = objective.mask(tokens, torch.Generator().manual_seed(2))
    selected = labels != IGNORE_INDEX
    multi_piece = [w for w in _words(tokenizer, ids) if len(w) > 1]
    assert multi_piece, "the test text must hold words of several pieces"
    for word in multi_piece:
        word_selected = selected[:, word]
        assert torch.equal(word_selected.all(1), word_selected.any(1))
    assert abs(selected.float().mean().item() - 0.3) < 0.05


def test_dynamic_masking_differs_by_generator_and_a_seed_reproduces_it(tokenizer) -> None:
    objective = masked_lm(tokenizer)
    windows = random_tokens(tokenizer, (8, 65), torch.Generator().manual_seed(0))
    first = objective.make_batch(windows, torch.Generator().manual_seed(10))
    again = objective.make_batch(windows, torch.Generator().manual_seed(10))
    later = objective.make_batch(windows, torch.Generator().manual_seed(11))
    assert torch.equal(first["labels"], again["labels"])
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["labels"], later["labels"])


def test_rows_are_framed_by_start_and_end_tokens(tokenizer) -> None:
    objective = masked_lm(tokenizer)
    windows = random_tokens(tokenizer, (4, 33), torch.Generator().manual_seed(0))
    batch = objective.make_batch(windows, torch.Generator().manual_seed(0))
    start = tokenizer.cls_id if tokenizer.cls_id is not None else tokenizer.bos_id
    end = tokenizer.sep_id if tokenizer.sep_id is not None else tokenizer.eos_id
    assert batch["input_ids"].shape == (4, 32)
    assert (batch["input_ids"][:, 0] == start).all() and (batch["input_ids"][:, -1] == end).all()
    restored = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])
    assert torch.equal(restored[:, 1:-1], windows[:, :30])


def test_tiny_bert_overfits_one_batch(tokenizer) -> None:
    cfg = dataclasses.replace(
        get_preset("bert-tiny"), vocab_size=384, d_model=32, num_heads=2, num_layers=2, d_ff=64
    )
    model = build_model(cfg)
    optimizer = build_optimizer(model, lr=3e-3, weight_decay=0.0, betas=(0.9, 0.95))
    windows = random_tokens(tokenizer, (4, 33), torch.Generator().manual_seed(0))
    batch = masked_lm(tokenizer, mask_rate=0.3).make_batch(windows, torch.Generator())
    for _ in range(200):
        output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert output.loss.item() < 0.05


def test_tokenizer_without_mask_token_is_refused() -> None:
    unigram = train_tokenizer("unigram", 250, [TEXT] * 50)
    with pytest.raises(
        LmforgeError, match=r"tokenizer of DATA has no mask token.*--kind wordpiece"
    ):
        build_objective(ObjectiveSection(), family="encoder", tokenizer=unigram, source="DATA")


@pytest.mark.parametrize("mask_rate", [0.0, 1.0, -0.1, 1.5])
def test_mask_rate_outside_zero_one_is_refused(mask_rate: float) -> None:
    with pytest.raises(LmforgeError, match=r"objective.mask_rate must be in \(0, 1\)"):
        ObjectiveSection(mask_rate=mask_rate)


def test_objective_must_fit_the_family(tokenizer) -> None:
    with pytest.raises(LmforgeError, match="objective mlm cannot train decoder models"):
        build_objective(
            ObjectiveSection(kind="mlm"), family="decoder", tokenizer=tokenizer, source="DATA"
        )
