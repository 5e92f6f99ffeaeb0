"""T5 span corruption: noise statistics, exact reconstruction, sentinel order, lengths, errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmforge.data.tokenizer import train_tokenizer
from lmforge.errors import LmforgeError
from lmforge.objectives.span_corruption import (
    SpanCorruption,
    compute_raw_length,
    corrupted_lengths,
    random_spans_noise_mask,
)

VOCAB = 200
SENTINELS = list(range(VOCAB - 1, VOCAB - 101, -1))  # T5 layout: <extra_id_0> is the last id
FAKE_TOKENIZER = SimpleNamespace(eos_id=1, pad_id=0, sentinel_ids=SENTINELS)


def raw_windows(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB - 100, (batch, length), generator=generator)


def reconstruct(inputs: list[int], targets: list[int]) -> list[int]:
    """Fill every sentinel of the input with the tokens following it in the target."""
    fills: dict[int, list[int]] = {}
    current = None
    for token in targets[:-1]:  # drop EOS
        if token in SENTINELS:
            current = token
            fills[current] = []
        else:
            fills[current].append(token)
    out: list[int] = []
    for token in inputs[:-1]:
        out.extend(fills[token] if token in SENTINELS else [token])
    return out


def spans(mask: torch.Tensor) -> list[int]:
    lengths, run = [], 0
    for flag in mask.tolist() + [False]:
        if flag:
            run += 1
        elif run:
            lengths.append(run)
            run = 0
    return lengths


@pytest.mark.parametrize(("density", "mean_span"), [(0.15, 3.0), (0.3, 5.0), (0.5, 2.0)])
def test_noise_fraction_and_mean_span_length_match_the_configuration(
    density: float, mean_span: float
) -> None:
    generator = torch.Generator().manual_seed(1)
    mask = random_spans_noise_mask(
        2000, 227, noise_density=density, mean_noise_span_length=mean_span, generator=generator
    )
    num_noise = round(227 * density)
    num_spans = round(num_noise / mean_span)
    # Exact per row (the reference rounds), so the averages are exact too.
    assert (mask.sum(dim=1) == num_noise).all()
    lengths = [length for row in mask[:200] for length in spans(row)]
    assert len(lengths) == 200 * num_spans
    assert sum(lengths) / len(lengths) == pytest.approx(num_noise / num_spans)
    assert not mask[:, 0].any()  # a non-noise span comes first
    # Random segmentation: span lengths vary, and the middle of a row is noise at the density.
    assert len(set(lengths)) > 3
    assert mask[:, 100:127].float().mean().item() == pytest.approx(density, abs=0.02)


def test_inputs_and_targets_reconstruct_the_original_with_ordered_unique_sentinels() -> None:
    objective = SpanCorruption(FAKE_TOKENIZER, "test")
    seq_len = 64
    length = objective.raw_length(seq_len)
    windows = raw_windows(50, length)
    batch = objective.make_batch(windows, torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape == (50, seq_len)
    assert batch["labels"].shape == (50, objective.target_length(seq_len))
    for row in range(50):
        inputs, targets = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        assert inputs[-1] == targets[-1] == FAKE_TOKENIZER.eos_id
        used = [t for t in inputs if t in SENTINELS]
        assert used == SENTINELS[: len(used)]  # <extra_id_0>, <extra_id_1>, ... in order
        assert [t for t in targets if t in SENTINELS] == used
        assert targets[0] == SENTINELS[0]
        assert reconstruct(inputs, targets) == windows[row].tolist()


def test_a_full_target_is_the_original_window_and_the_input_is_corrupted_as_before() -> None:
    spans_only = SpanCorruption(FAKE_TOKENIZER, "test")
    full = SpanCorruption(FAKE_TOKENIZER, "test", full_target=True)
    seq_len = 64
    windows = raw_windows(8, full.raw_length(seq_len))
    batch = full.make_batch(windows, torch.Generator().manual_seed(0))
    reference = spans_only.make_batch(windows, torch.Generator().manual_seed(0))
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert batch["labels"].shape == (8, full.target_length(seq_len))
    assert torch.equal(batch["labels"][:, :-1], windows)
    assert (batch["labels"][:, -1] == FAKE_TOKENIZER.eos_id).all()
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
    assert full.target_fraction == 1.0


def test_decoder_inputs_are_labels_shifted_right_from_the_pad_token() -> None:
    objective = SpanCorruption(FAKE_TOKENIZER, "test")
    batch = objective.make_batch(raw_windows(3, objective.raw_length(32)), torch.Generator())
    assert (batch["decoder_input_ids"][:, 0] == 0).all()
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])


@pytest.mark.parametrize("seq_len", [3, 4, 5, 8, 17, 100, 512, 568])
def test_raw_length_fills_the_encoder_exactly(seq_len: int) -> None:
    length = compute_raw_length(seq_len, 0.15, 3.0)
    assert corrupted_lengths(length, 0.15, 3.0)[0] == seq_len
    assert corrupted_lengths(length + 1, 0.15, 3.0)[0] > seq_len
    objective = SpanCorruption(FAKE_TOKENIZER, "test")
    batch = objective.make_batch(raw_windows(4, length), torch.Generator())
    assert batch["input_ids"].shape[1] == seq_len


def test_reference_lengths_for_t5s_512_token_inputs() -> None:
    # t5.data.preprocessors.compute_input_and_target_lengths(512, 0.15, 3.0) -> (568, 114)
    assert compute_raw_length(512, 0.15, 3.0) == 568
    assert corrupted_lengths(568, 0.15, 3.0)[1] == 114


def test_same_generator_seed_same_corruption_different_seed_different() -> None:
    objective = SpanCorruption(FAKE_TOKENIZER, "test")
    windows = raw_windows(4, objective.raw_length(64))
    first = objective.make_batch(windows, torch.Generator().manual_seed(5))
    again = objective.make_batch(windows, torch.Generator().manual_seed(5))
    other = objective.make_batch(windows, torch.Generator().manual_seed(6))
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["input_ids"], other["input_ids"])


def test_real_unigram_tokenizer_round_trips_text() -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 20
    tokenizer = train_tokenizer("unigram", 160, [text, text.upper()])
    objective = SpanCorruption(tokenizer, "test")
    ids = tokenizer.encode(text)
    length = objective.raw_length(24)
    batch = objective.make_batch(torch.tensor([ids[:length]]), torch.Generator())
    assert tokenizer.decode(batch["input_ids"][0].tolist()).count("<extra_id_") >= 1
    assert batch["decoder_input_ids"][0, 0].item() == tokenizer.pad_id


def test_too_few_sentinels_is_one_clear_error() -> None:
    objective = SpanCorruption(SimpleNamespace(eos_id=1, pad_id=0, sentinel_ids=[199]), "DATA")
    with pytest.raises(LmforgeError, match="sentinel tokens"):
        objective.raw_length(64)


def test_a_sequence_too_short_to_corrupt_is_one_clear_error() -> None:
    objective = SpanCorruption(FAKE_TOKENIZER, "test")
    with pytest.raises(LmforgeError, match="cannot fit train.seq_len=2"):
        objective.raw_length(2)


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_noise_density_outside_zero_one_is_refused(density: float) -> None:
    with pytest.raises(LmforgeError, match="noise_density"):
        SpanCorruption(FAKE_TOKENIZER, "test", noise_density=density)
