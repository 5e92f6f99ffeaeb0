"""How each model type frames its input: the special tokens around a single text, between the two
texts of a pair and around a seq2seq source or target, and `shift_right`, the decoder input made
from the labels. Objectives, tasks, fill-mask and generate all frame through here.

The style follows the tokenizer's special-token roles (`framing_for`), except that decoders read
text as it is, whatever tokens their tokenizer has:

    style (roles)          single text      pair                              seq2seq source/target
    BERT (cls, sep)        [CLS] a [SEP]    [CLS] a [SEP] b [SEP]             -
                                            segments 0 ... 0 1 ... 1
    RoBERTa, BART          <s> a </s>       <s> a </s></s> b </s>             <s> a </s>   (BART)
      (bos, eos)
    T5 (eos only)          a </s>           a </s> b </s>                     a </s>
    GPT-2, BLOOM           a                a b                               -
      (decoders, or none)

These are what transformers' tokenizers of each family build (`build_inputs_with_special_tokens`,
`create_token_type_ids_from_sequences`). Segment ids are 1 from the second text on only for models
with two segment types (BERT's token types); other models read all zeros. A length limit counts the
special tokens; the longest text loses its last token until everything fits (transformers'
truncation="longest_first").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError

IGNORE_INDEX = -100
"""Label of positions without a target (the models' IGNORE_INDEX, which data/ cannot import)."""


@dataclass(frozen=True)
class Framing:
    """The special ids one model type puts around and between its texts."""

    start: tuple[int, ...] = ()
    """Ids before the first text: ([CLS],), (<s>,) or ()."""
    middle: tuple[int, ...] = ()
    """Ids between two texts: ([SEP],), (</s>, </s>), (</s>,) or ()."""
    end: tuple[int, ...] = ()
    """Ids after the last text: ([SEP],), (</s>,) or ()."""
    has_segments: bool = False
    """Whether texts after the first get segment id 1 (models with two segment types)."""

    def special_count(self, num_texts: int = 1) -> int:
        """How many special ids framing `num_texts` texts adds."""
        return len(self.start) + len(self.middle) * (num_texts - 1) + len(self.end)

    def require_enclosing(self, needed_by: str) -> None:
        """Refuse a framing without both a start and an end token (a head reading [CLS] / <s>,
        masked language modeling)."""
        if not (self.start and self.end):
            raise LmforgeError(
                f"{needed_by} frames texts as [CLS] ... [SEP] or <s> ... </s>, but the tokenizer "
                "lacks one of them; train one with `lmforge tokenizer train --kind wordpiece` "
                "(BERT) or `--kind bpe` (RoBERTa)"
            )

    def single(self, ids: Sequence[int], max_length: int | None = None) -> list[int]:
        """One framed text (a seq2seq source or target too), at most `max_length` ids."""
        return self.join([ids], max_length)[0]

    def pair(
        self, first: Sequence[int], second: Sequence[int], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        """(ids, segment ids) of a framed pair, at most `max_length` ids."""
        return self.join([first, second], max_length)

    def join(
        self, texts: Sequence[Sequence[int]], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        """(ids, segment ids) of one or more framed texts, at most `max_length` ids; segment 0
        runs to the first middle's end, as BERT's token types."""
        pieces = [list(text) for text in texts]
        if max_length is not None:
            budget = max_length - self.special_count(len(pieces))
            kept = _longest_first([len(piece) for piece in pieces], budget)
            pieces = [piece[:n] for piece, n in zip(pieces, kept, strict=True)]
        ids, segment_ids = list(self.start), [0] * len(self.start)
        for index, piece in enumerate(pieces):
            part = piece + list(self.middle if index < len(pieces) - 1 else self.end)
            ids += part
            segment_ids += [int(self.has_segments and index > 0)] * len(part)
        return ids, segment_ids


def _longest_first(lengths: list[int], budget: int) -> list[int]:
    """The lengths left after removing one token at a time from the longest text (the first of
    equally long ones) until they add up to at most `budget`; computed a level at a time, since a
    summarization source may lose thousands of tokens."""
    lengths = list(lengths)
    excess = sum(lengths) - max(budget, 0)
    while excess > 0:
        top = max(lengths)
        tied = [i for i, n in enumerate(lengths) if n == top]
        below = max((n for n in lengths if n < top), default=0)
        steps = min(top - below, excess // len(tied))  # whole levels: each tied text loses one
        if steps == 0:  # fewer tokens to remove than tied texts: the first ones lose one more
            for i in tied[:excess]:
                lengths[i] -= 1
            break
        for i in tied:
            lengths[i] -= steps
        excess -= steps * len(tied)
    return lengths


def framing_for(tokenizer: Tokenizer, family: str, *, num_segment_types: int = 0) -> Framing:
    """The framing of a model of `family` ("encoder", "decoder", "encoder_decoder") reading text
    of `tokenizer`; segment ids only when the model has `num_segment_types` >= 2."""
    tok = tokenizer
    has_segments = num_segment_types >= 2
    if family == "decoder":  # GPT-2 and BLOOM read text as it is
        return Framing()
    if tok.cls_id is not None and tok.sep_id is not None:
        return Framing(
            start=(tok.cls_id,), middle=(tok.sep_id,), end=(tok.sep_id,), has_segments=has_segments
        )
    if tok.eos_id is None:
        return Framing()
    eos = (tok.eos_id,)
    if tok.bos_id is not None:
        return Framing(start=(tok.bos_id,), middle=eos * 2, end=eos, has_segments=has_segments)
    return Framing(middle=eos, end=eos, has_segments=has_segments)


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs (B, T): `start_id` then labels[:, :-1], ignored labels read as padding
    (transformers' shift_tokens_right)."""
    shifted = labels.new_full(labels.shape, start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)
