"""BART denoising: infilling statistics (Poisson spans, masked fraction), reconstruction, sentence
permutation, framing, short rows, errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmforge.data.tokenizer import train_tokenizer
from lmforge.errors import LmforgeError
from lmforge.objectives.denoising import (
    BartDenoising,
    infill,
    permute_sentences,
    sample_span_lengths,
)

MASK = 4
TEXT = (
    "The cat sat on the mat. Where is the dog? It ran away! Nobody knows why. "
    "The end is near. Birds sing in the morning. "
)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return train_tokenizer("bpe", 400, [TEXT * 20])


def run_infill(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    tokens = torch.arange(10, 10 + n)  # distinct tokens, none equal to MASK
    generator = torch.Generator().manual_seed(seed)
    noised, spans = infill(
        tokens, mask_id=MASK, mask_ratio=0.3, poisson_lambda=3.0, generator=generator
    )
    return tokens, noised, spans


def test_span_lengths_follow_poisson_3() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths: list[int] = []
    for _ in range(300):
        # All but the last span of each draw (the last is cut to fit the masking budget).
        lengths += sample_span_lengths(600, 3.0, generator)[:-1]
    counts = torch.bincount(torch.tensor(lengths)).double()
    total = counts.sum().item()
    mean = sum(lengths) / total
    variance = sum((x - mean) ** 2 for x in lengths) / total
    assert total > 50_000
    assert mean == pytest.approx(3.0, abs=0.03)
    assert variance == pytest.approx(3.0, abs=0.06)
    # Chi-square over lengths 0..8 and a >= 9 tail: 9 degrees of freedom, 99.9% quantile 27.9.
    expected = [math.exp(-3) * 3**k / math.factorial(k) * total for k in range(9)]
    expected.append(total - sum(expected))
    observed = counts[:9].tolist() + [counts[9:].sum().item()]
    chi_square = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    assert chi_square < 27.9


def test_masked_fraction_is_thirty_percent_and_spans_become_single_masks() -> None:
    masked = total = 0
    for seed in range(200):
        tokens, noised, spans = run_infill(300, seed)
        assert sum(spans) == math.ceil(300 * 0.3)
        assert (noised == MASK).sum().item() == len(spans)
        masked += sum(spans)
        total += 300
    assert masked / total == pytest.approx(0.3, abs=0.001)


def test_filling_each_mask_with_its_span_restores_the_original() -> None:
    for seed in range(50):
        tokens, noised, spans = run_infill(97, seed)
        # Masked runs are the tokens missing between the kept ones, in order.
        kept = [t for t in noised.tolist() if t != MASK]
        restored, position, span_index = [], 0, 0
        for token in noised.tolist():
            if token == MASK:
                restored += tokens[position : position + spans[span_index]].tolist()
                position += spans[span_index]
                span_index += 1
            else:
                assert token == tokens[position].item()
                restored.append(token)
                position += 1
        assert restored == tokens.tolist()
        assert len(kept) == 97 - sum(spans)
        assert len(noised) <= 97
        # Zero-length spans insert a mask between two kept tokens.
        assert all(a != MASK or b != MASK for a, b in zip(noised[:-1], noised[1:], strict=True))


def test_zero_length_spans_insert_masks() -> None:
    inserts = sum(spans.count(0) for spans in (run_infill(300, s)[2] for s in range(100)))
    assert inserts > 0


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_very_short_sequences_work(n: int) -> None:
    for seed in range(20):
        tokens, noised, spans = run_infill(n, seed)
        assert 1 <= len(noised) <= n
        assert sum(spans) == math.ceil(n * 0.3)


def test_sentence_permutation_is_a_permutation_of_the_sentences(bpe_tokenizer) -> None:
    objective = BartDenoising(bpe_tokenizer, "test", text_infilling=False)
    separator = bpe_tokenizer.separator_id
    tokens = torch.tensor(
        bpe_tokenizer.encode(TEXT) + [separator] + bpe_tokenizer.encode("One. Two! Three?")
    )
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        permuted = permute_sentences(tokens, objective.is_end, separator, generator)
        assert sorted(permuted.tolist()) == sorted(tokens.tolist())
        # The separator stays put, so each document keeps its own sentences.
        split = tokens.tolist().index(separator)
        assert permuted[split].item() == separator
        first = bpe_tokenizer.decode(permuted[:split].tolist())
        sentences = sorted(s.strip() for s in first.replace("?", ".").replace("!", ".").split("."))
        original = TEXT.replace("?", ".").replace("!", ".").split(".")
        assert sentences == sorted(s.strip() for s in original)
        seen.add(first)
    assert len(seen) > 5


def test_batch_is_framed_shifted_from_eos_and_padded(bpe_tokenizer) -> None:
    objective = BartDenoising(bpe_tokenizer, "test")
    ids = bpe_tokenizer.encode(TEXT * 3)
    n = objective.raw_length(40)
    windows = torch.tensor([ids[:n], ids[n : 2 * n]])
    batch = objective.make_batch(windows, torch.Generator().manual_seed(0))
    assert all(v.shape == (2, 40) for v in batch.values())
    labels = batch["labels"]
    assert (labels[:, 0] == bpe_tokenizer.bos_id).all()
    assert (labels[:, -1] == bpe_tokenizer.eos_id).all()
    assert torch.equal(labels[:, 1:-1], windows)
    assert (batch["decoder_input_ids"][:, 0] == bpe_tokenizer.eos_id).all()
    assert torch.equal(batch["decoder_input_ids"][:, 1:], labels[:, :-1])
    mask = batch["attention_mask"].bool()
    assert (batch["input_ids"][~mask] == bpe_tokenizer.pad_id).all()
    assert (batch["input_ids"] == bpe_tokenizer.mask_id).any()


def test_tokenizer_without_mask_token_is_refused() -> None:
    tokenizer = SimpleNamespace(bos_id=0, eos_id=2, pad_id=1, mask_id=None)
    with pytest.raises(LmforgeError, match="mask"):
        BartDenoising(tokenizer, "DATA", sentence_permutation=False)


def test_too_short_seq_len_is_refused(bpe_tokenizer) -> None:
    with pytest.raises(LmforgeError, match="train.seq_len >= 3"):
        BartDenoising(bpe_tokenizer, "test").raw_length(2)
