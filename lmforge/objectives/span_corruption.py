"""T5 span corruption (Raffel et al. 2020, section 3.1.4; the reference is
`random_spans_noise_mask`, `compute_input_and_target_lengths` and `noise_span_to_unique_sentinel` in
google-research/text-to-text-transfer-transformer, t5/data/preprocessors.py).

A raw window of L tokens is split into alternating non-noise and noise spans, starting with a
non-noise one. round(L * noise_density) tokens are noise, in round(noise / mean_noise_span_length)
spans; the span lengths are a uniformly random segmentation (each a composition of its total into
that many positive parts). Every noise span becomes one sentinel in the input; the target lists each
sentinel followed by the tokens it replaced; both end with EOS:

    raw      The  quick brown fox jumps over the  lazy dog
    noise         ^^^^^^^^^^^           ^^^^
    input    The  <extra_id_0>  fox jumps <extra_id_1> the lazy dog </s>
    target   <extra_id_0> quick brown <extra_id_1> over </s>

Sentinel k is the tokenizer's `<extra_id_k>`, numbered in order of appearance. L is chosen (the
reference's `compute_input_and_target_lengths`) as the longest raw length whose input is at most
the encoder length; here the input then fills it exactly, so packed rows need no padding:
`raw_length(seq_len)` gives L, and the trainer cuts windows of L tokens (a WindowSampler with
window_len = L) instead of seq_len + 1. Every row of a batch
has the same input length, seq_len, and the same target length, `target_length(seq_len)`.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from lmforge.data.framing import shift_right
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError


def noise_counts(
    length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(noise tokens, noise spans) of a raw sequence of `length` (>= 2) tokens, with the reference's
    clamps: at least one noise token and one span, at least one non-noise token."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    return num_noise, num_spans


def corrupted_lengths(
    length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(input length, target length) of a raw sequence of `length` tokens, EOS included."""
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


@lru_cache(maxsize=64)
def compute_raw_length(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> int:
    """The raw length whose corrupted input is exactly `inputs_length` tokens.

    The input length grows by 0 or 1 per raw token (a token more adds 1, a noise token more
    removes 1 and a span more adds 1, and spans only change when noise does), so the longest raw
    length that fits also fills; an error when none does.
    """
    length = 2
    if corrupted_lengths(2, noise_density, mean_noise_span_length)[0] > inputs_length:
        raise LmforgeError(
            f"span corruption cannot fit train.seq_len={inputs_length}: even 2 raw tokens need "
            f"{corrupted_lengths(2, noise_density, mean_noise_span_length)[0]} input tokens "
            "(kept token, sentinel, EOS); raise --train.seq_len"
        )
    while corrupted_lengths(length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        length += 1
    filled = corrupted_lengths(length, noise_density, mean_noise_span_length)[0]
    if filled != inputs_length:
        raise LmforgeError(
            f"span corruption with noise_density={noise_density} and mean_noise_span_length="
            f"{mean_noise_span_length} cannot fill train.seq_len={inputs_length} exactly "
            f"(closest input: {filled} tokens); change train.seq_len"
        )
    return length


def _random_segmentation(
    batch_size: int, num_items: int, num_segments: int, generator: torch.Generator
) -> torch.Tensor:
    """(B, num_segments) lengths >= 1 adding up to num_items, uniform over compositions: the
    reference shuffles num_segments - 1 "starts a segment" marks over the num_items - 1 gaps."""
    draws = torch.rand(batch_size, num_items - 1, generator=generator)
    marks = draws.argsort(dim=1) < num_segments - 1  # exactly num_segments - 1 True per row
    first_in_segment = torch.nn.functional.pad(marks.long(), (1, 0))
    segment_id = first_in_segment.cumsum(dim=1)  # (B, num_items) in [0, num_segments)
    lengths = torch.zeros(batch_size, num_segments, dtype=torch.long)
    return lengths.scatter_add_(1, segment_id, torch.ones_like(segment_id))


def random_spans_noise_mask(
    batch_size: int,
    length: int,
    *,
    noise_density: float,
    mean_noise_span_length: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B, length) bool, True at noise tokens: alternating non-noise / noise spans, non-noise
    first, as the reference (without its optional random roll)."""
    if length < 2:
        raise LmforgeError(f"span corruption needs at least 2 tokens, got {length}")
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(batch_size, num_noise, num_spans, generator)
    kept_lengths = _random_segmentation(batch_size, length - num_noise, num_spans, generator)
    interleaved = torch.stack([kept_lengths, noise_lengths], dim=2).reshape(batch_size, -1)
    span_starts = interleaved.cumsum(dim=1)[:, :-1]  # (B, 2 spans - 1), all < length
    indicator = torch.zeros(batch_size, length, dtype=torch.long)
    indicator.scatter_(1, span_starts, 1)
    return indicator.cumsum(dim=1) % 2 == 1


def replace_spans_with_sentinels(
    tokens: torch.Tensor, span_mask: torch.Tensor, sentinel_ids: torch.Tensor
) -> torch.Tensor:
    """Replace each run of True in `span_mask` by one sentinel (k-th run -> sentinel_ids[k]) and
    drop the rest of the run (the reference's `noise_span_to_unique_sentinel`).

    tokens, span_mask: (B, L) with the same number of runs and masked tokens in every row
    -> (B, L - masked + runs).
    """
    previous = torch.nn.functional.pad(span_mask[:, :-1], (1, 0), value=False)
    first = span_mask & ~previous
    sentinel = sentinel_ids[(first.long().cumsum(dim=1) - 1).clamp(min=0)]
    replaced = torch.where(first, sentinel, tokens)
    keep = ~span_mask | first
    return replaced[keep].view(tokens.shape[0], -1)


class SpanCorruption:
    """The T5 pretraining objective on packed windows of raw tokens."""

    name = "span_corruption"
    families = ("encoder_decoder",)
    is_autoregressive = False

    def __init__(
        self,
        tokenizer: Tokenizer,
        source: str,
        *,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        full_target: bool = False,
    ) -> None:
        """`source` names the tokenizer in errors (the data directory it came with). With
        `full_target` the target is the whole raw window (then EOS) instead of the spans."""
        if not 0 < noise_density < 1:
            raise LmforgeError(f"noise_density must be in (0, 1), got {noise_density}")
        if mean_noise_span_length < 1:
            raise LmforgeError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
        if tokenizer.eos_id is None or tokenizer.pad_id is None:
            raise LmforgeError(
                f"span corruption ends inputs and targets with EOS and starts the decoder from "
                f"the pad token, but the tokenizer of {source} lacks one; train one with "
                "`lmforge tokenizer train --kind unigram`"
            )
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.sentinel_ids = torch.tensor(tokenizer.sentinel_ids, dtype=torch.long)
        self.eos_id = tokenizer.eos_id
        self.decoder_start_id = tokenizer.pad_id  # T5 starts decoding from <pad> (id 0)
        self.pad_id = tokenizer.pad_id
        self.source = source
        self.full_target = full_target
        # Targets are about noise_density + spans of the input length (FLOP accounting).
        self.target_fraction = (
            1.0 if full_target else noise_density * (1 + 1 / mean_noise_span_length)
        )

    def raw_length(self, seq_len: int) -> int:
        """Raw tokens per example for an encoder input of exactly `seq_len` tokens; checks that
        the tokenizer has a sentinel for every span."""
        length = compute_raw_length(seq_len, self.noise_density, self.mean_noise_span_length)
        _, num_spans = noise_counts(length, self.noise_density, self.mean_noise_span_length)
        if num_spans > len(self.sentinel_ids):
            raise LmforgeError(
                f"span corruption of train.seq_len={seq_len} makes {num_spans} noise spans but the "
                f"tokenizer of {self.source} has {len(self.sentinel_ids)} sentinel tokens "
                "(<extra_id_N>); lower train.seq_len or the noise density, or train a unigram "
                "tokenizer (100 sentinels)"
            )
        return length

    def target_length(self, seq_len: int) -> int:
        length = self.raw_length(seq_len)
        if self.full_target:
            return length + 1
        return corrupted_lengths(length, self.noise_density, self.mean_noise_span_length)[1]

    def make_batch(
        self, windows: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """windows: (B, L) raw tokens, L = raw_length(T) -> input_ids (B, T), decoder_input_ids
        and labels (B, target_length(T)); no padding anywhere."""
        B, length = windows.shape
        num_noise, num_spans = noise_counts(length, self.noise_density, self.mean_noise_span_length)
        if num_spans > len(self.sentinel_ids):
            raise LmforgeError(
                f"span corruption of {length} raw tokens makes {num_spans} noise spans but the "
                f"tokenizer of {self.source} has {len(self.sentinel_ids)} sentinel tokens"
            )
        noise = random_spans_noise_mask(
            B,
            length,
            noise_density=self.noise_density,
            mean_noise_span_length=self.mean_noise_span_length,
            generator=generator,
        )
        eos = windows.new_full((B, 1), self.eos_id)
        inputs = replace_spans_with_sentinels(windows, noise, self.sentinel_ids)
        if self.full_target:
            targets = windows
        else:
            targets = replace_spans_with_sentinels(windows, ~noise, self.sentinel_ids)
        labels = torch.cat([targets, eos], dim=1)
        return {
            "input_ids": torch.cat([inputs, eos], dim=1),
            "decoder_input_ids": shift_right(labels, self.decoder_start_id, self.pad_id),
            "labels": labels,
        }
