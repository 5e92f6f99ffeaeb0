"""The framing of every model type (single text, pair, seq2seq source and target), exactly as the
reference tokenizers build them, the length budget that counts the special tokens, and
shift_right."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from lmforge.data.framing import Framing, framing_for, shift_right
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError

A, B = [20, 21, 22], [23, 24]
"""Token ids of two texts (ordinary words in every test vocabulary)."""

SPECIALS = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "bpe": {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"},
    "unigram": {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
    "gpt2": {"bos": "<|endoftext|>", "eos": "<|endoftext|>"},
}


def _tokenizer(kind: str) -> Tokenizer:
    """A word-level tokenizer with the special tokens (and roles) of `kind`, then words w5...w29."""
    roles = SPECIALS[kind]
    specials = list(dict.fromkeys(roles.values()))
    words = [f"w{i}" for i in range(len(specials), 30)]
    vocab = {token: i for i, token in enumerate(specials + words)}
    return Tokenizer(HFTokenizer(models.WordLevel(vocab, unk_token=specials[0])), roles)


def _id(tokenizer: Tokenizer, token: str) -> int:
    return tokenizer.inner.token_to_id(token)


def test_bert_frames_cls_sep_with_token_types() -> None:
    tok = _tokenizer("wordpiece")
    cls, sep = _id(tok, "[CLS]"), _id(tok, "[SEP]")
    framing = framing_for(tok, "encoder", num_segment_types=2)
    assert framing.single(A) == [cls, *A, sep]
    ids, segments = framing.pair(A, B)
    assert ids == [cls, *A, sep, *B, sep]
    assert segments == [0] * (len(A) + 2) + [1] * (len(B) + 1)  # [CLS] a [SEP] | b [SEP]
    assert framing.special_count() == 2 and framing.special_count(2) == 3


def test_roberta_frames_with_a_double_separator_and_one_segment() -> None:
    tok = _tokenizer("bpe")
    bos, eos = _id(tok, "<s>"), _id(tok, "</s>")
    framing = framing_for(tok, "encoder", num_segment_types=1)
    assert framing.single(A) == [bos, *A, eos]
    ids, segments = framing.pair(A, B)
    assert ids == [bos, *A, eos, eos, *B, eos]
    assert segments == [0] * len(ids)
    assert framing.special_count(2) == 4


def test_t5_source_and_target_end_with_eos() -> None:
    tok = _tokenizer("unigram")
    framing = framing_for(tok, "encoder_decoder")
    assert framing.single(A) == [*A, _id(tok, "</s>")]
    assert framing.single(A, max_length=3) == [*A[:2], _id(tok, "</s>")]  # the end token stays


def test_bart_source_and_target_are_enclosed() -> None:
    tok = _tokenizer("bpe")
    framing = framing_for(tok, "encoder_decoder")
    assert framing.single(B) == [_id(tok, "<s>"), *B, _id(tok, "</s>")]
    assert framing.special_count() == 2


@pytest.mark.parametrize("kind", ["gpt2", "bpe", "wordpiece"])
def test_decoders_read_text_as_it_is(kind: str) -> None:
    framing = framing_for(_tokenizer(kind), "decoder", num_segment_types=2)
    assert framing.single(A) == A
    assert framing.pair(A, B) == ([*A, *B], [0] * (len(A) + len(B)))
    assert framing.special_count(2) == 0


def test_truncation_counts_special_tokens_and_cuts_the_longest_text_first() -> None:
    tok = _tokenizer("wordpiece")
    cls, sep = _id(tok, "[CLS]"), _id(tok, "[SEP]")
    framing = framing_for(tok, "encoder", num_segment_types=2)
    long = list(range(100, 110))
    ids, segments = framing.pair(long, B, max_length=8)  # 5 text tokens fit beside 3 specials
    assert ids == [cls, 100, 101, 102, sep, *B, sep]
    assert segments == [0] * 5 + [1] * 3
    ids, _ = framing.pair([7] * 4, [8] * 4, max_length=8)  # equally long: the first loses more
    assert ids == [cls, 7, 7, sep, 8, 8, 8, sep]
    assert framing.single(long, max_length=1) == [cls, sep]  # no room: only the specials


def test_enclosing_framing_is_required_where_a_head_reads_it() -> None:
    framing_for(_tokenizer("bpe"), "encoder").require_enclosing("extractive QA")
    with pytest.raises(LmforgeError, match="extractive QA frames texts as"):
        framing_for(_tokenizer("unigram"), "encoder").require_enclosing("extractive QA")
    with pytest.raises(LmforgeError, match="masked language modeling"):
        Framing().require_enclosing("masked language modeling")


def test_shift_right_starts_from_the_start_id_and_pads_ignored_labels() -> None:
    labels = torch.tensor([[5, 6, 7], [8, -100, -100]])
    assert shift_right(labels, 0, 1).tolist() == [[0, 5, 6], [0, 8, 1]]
