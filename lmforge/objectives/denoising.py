"""BART denoising (Lewis et al. 2020, section 2.2; fairseq's `DenoisingDataset`): sentence
permutation, then text infilling; the decoder reconstructs the original text.

Sentence permutation: the sentences of each document are shuffled. A sentence ends after a token
whose text, trailing whitespace removed, ends with '.', '!' or '?' (so "Ġ.", "▁!" and "...");
a document ends at the separator token of the packed stream, which stays where it is, so sentences
never cross documents; the text after a document's last sentence end is one more sentence.

Text infilling: ceil(mask_ratio * n) of the n tokens are masked (fairseq rounds up too), in spans
whose lengths are drawn from Poisson(poisson_lambda) until they cover that many tokens (the last one
cut to fit). Each span becomes ONE mask token; a zero-length span inserts a mask token. Unlike
fairseq, spans never overlap or touch: each is placed in its own gap between unmasked tokens, so
every mask stands for exactly one drawn span and the span-length distribution is the configured
one. Two rare cases in short sequences, to keep that true and the input no longer than the
original: insertions beyond (masked tokens - spans) are dropped, and when there are more spans than
gaps the last non-empty ones are merged.

    original   <s> A B C D E F G H </s>
    input      <s> A <mask> E <mask> F G <mask> </s>      spans "B C D", "", "H"
    decoder    </s> <s> A B C D E F G H                   (labels shifted right from </s>)
    labels     <s> A B C D E F G H </s>

Rows are `raw_length(seq_len) = seq_len - 2` raw tokens framed by <s> and </s>; inputs are padded
to seq_len (attention_mask marks the real tokens); labels are seq_len long, nothing ignored.
"""

from __future__ import annotations

import math

import torch

from lmforge.data.framing import shift_right
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError

SENTENCE_END = (".", "!", "?")


def sentence_end_table(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) bool: True for tokens that end a sentence (see the module docstring); special tokens
    are added tokens, never in the model's own vocabulary, so never sentence ends."""
    table = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    vocab = tokenizer.inner.get_vocab(with_added_tokens=False)
    table[[i for token, i in vocab.items() if token.rstrip().endswith(SENTENCE_END)]] = True
    return table


def permute_sentences(
    tokens: torch.Tensor, is_end: torch.Tensor, separator_id: int, generator: torch.Generator
) -> torch.Tensor:
    """(n,) tokens -> (n,) with the sentences of each document in random order."""
    out: list[torch.Tensor] = []
    sentences: list[torch.Tensor] = []
    start = 0

    def flush() -> None:
        for index in torch.randperm(len(sentences), generator=generator).tolist():
            out.append(sentences[index])
        sentences.clear()

    ends = is_end[tokens].tolist()
    for position, token in enumerate(tokens.tolist()):
        if token == separator_id:
            if position > start:
                sentences.append(tokens[start:position])
            flush()
            out.append(tokens[position : position + 1])
            start = position + 1
        elif ends[position]:
            sentences.append(tokens[start : position + 1])
            start = position + 1
    if start < len(tokens):
        sentences.append(tokens[start:])
    flush()
    return torch.cat(out) if out else tokens


def sample_span_lengths(
    num_to_mask: int, poisson_lambda: float, generator: torch.Generator
) -> list[int]:
    """Poisson(poisson_lambda) lengths drawn until they add up to `num_to_mask`, the last one cut
    to fit (zeros included: they are insertions)."""
    lengths: list[int] = []
    total = 0
    while total < num_to_mask:
        draws = torch.poisson(torch.full((max(num_to_mask, 8),), poisson_lambda), generator)
        for length in draws.long().tolist():
            length = min(length, num_to_mask - total)
            lengths.append(length)
            total += length
            if total == num_to_mask:
                break
    return lengths


def infill(
    tokens: torch.Tensor,
    *,
    mask_id: int,
    mask_ratio: float,
    poisson_lambda: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, list[int]]:
    """Text infilling of (n,) tokens -> (noised tokens (<= n,), span lengths in text order)."""
    n = len(tokens)
    lengths = sample_span_lengths(math.ceil(n * mask_ratio), poisson_lambda, generator)
    spans = [length for length in lengths if length > 0]
    num_zero = len(lengths) - len(spans)
    num_masked = sum(spans)
    num_gaps = n - num_masked + 1
    while len(spans) > num_gaps:  # more spans than places for them: merge the last two
        spans[-2:] = [spans[-2] + spans[-1]]
    num_inserts = min(num_zero, num_masked - len(spans), num_gaps - len(spans))
    spans += [0] * max(num_inserts, 0)
    order = torch.randperm(len(spans), generator=generator).tolist()
    gaps = torch.randperm(num_gaps, generator=generator)[: len(spans)].tolist()
    span_at = {gap: spans[index] for gap, index in zip(gaps, order, strict=True)}
    out: list[int] = []
    in_order: list[int] = []
    position = 0
    values = tokens.tolist()
    for gap in range(num_gaps):
        if gap in span_at:
            out.append(mask_id)
            in_order.append(span_at[gap])
            position += span_at[gap]
        if position < n:
            out.append(values[position])
            position += 1
    return torch.tensor(out, dtype=tokens.dtype), in_order


class BartDenoising:
    """BART's pretraining objective on packed windows of raw tokens."""

    name = "bart_denoising"
    families = ("encoder_decoder",)
    is_autoregressive = False
    target_fraction = 1.0

    def __init__(
        self,
        tokenizer: Tokenizer,
        source: str,
        *,
        text_infilling: bool = True,
        sentence_permutation: bool = True,
        mask_ratio: float = 0.3,
        poisson_lambda: float = 3.0,
    ) -> None:
        """`source` names the tokenizer in errors (the data directory it came with)."""
        roles = {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id}
        if text_infilling:
            roles["mask"] = tokenizer.mask_id
        missing = [role for role, token_id in roles.items() if token_id is None]
        if missing:
            raise LmforgeError(
                f"BART denoising needs the {', '.join(missing)} token(s), which the tokenizer of "
                f"{source} lacks; train one with `lmforge tokenizer train --kind bpe`"
            )
        if not 0 < mask_ratio < 1:
            raise LmforgeError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if poisson_lambda <= 0:
            raise LmforgeError(f"poisson_lambda must be > 0, got {poisson_lambda}")
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        self.mask_id = tokenizer.mask_id
        self.decoder_start_id = tokenizer.eos_id  # BART starts decoding from </s>
        self.separator_id = tokenizer.separator_id
        self.text_infilling = text_infilling
        self.mask_ratio = mask_ratio
        self.poisson_lambda = poisson_lambda
        self.is_end = sentence_end_table(tokenizer) if sentence_permutation else None

    def raw_length(self, seq_len: int) -> int:
        """Raw tokens per example: seq_len minus the <s> and </s> framing."""
        if seq_len < 3:
            raise LmforgeError(
                f"BART denoising frames rows as <s> ... </s> and needs train.seq_len >= 3, "
                f"got {seq_len}"
            )
        return seq_len - 2

    def noise(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(n,) raw tokens -> noised tokens (<= n,)."""
        if self.is_end is not None:
            tokens = permute_sentences(tokens, self.is_end, self.separator_id, generator)
        if self.text_infilling:
            tokens, _ = infill(
                tokens,
                mask_id=self.mask_id,
                mask_ratio=self.mask_ratio,
                poisson_lambda=self.poisson_lambda,
                generator=generator,
            )
        return tokens

    def make_batch(
        self, windows: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """windows: (B, n), n = raw_length(T) -> input_ids, attention_mask, decoder_input_ids,
        labels, all (B, T)."""
        B, n = windows.shape
        input_ids = windows.new_full((B, n + 2), self.pad_id)
        attention_mask = torch.zeros_like(input_ids)
        for row in range(B):
            noised = self.noise(windows[row], generator)
            framed = torch.cat(
                [windows.new_tensor([self.bos_id]), noised, windows.new_tensor([self.eos_id])]
            )
            input_ids[row, : len(framed)] = framed
            attention_mask[row, : len(framed)] = 1
        labels = torch.cat(
            [windows.new_full((B, 1), self.bos_id), windows, windows.new_full((B, 1), self.eos_id)],
            dim=1,
        )
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": shift_right(labels, self.decoder_start_id, self.pad_id),
            "labels": labels,
        }
