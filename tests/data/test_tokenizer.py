"""Tokenizer training, roles, round trips and loading foreign tokenizer.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from lmforge.data.tokenizer import NUM_SENTINELS, load_tokenizer, train_tokenizer
from lmforge.errors import LmforgeError

EXPECTED_ROLES = {
    "bpe": {"bos_id": 0, "pad_id": 1, "eos_id": 2, "unk_id": 3, "mask_id": 4},
    "wordpiece": {"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4},
    "unigram": {"pad_id": 0, "eos_id": 1, "unk_id": 2},
}


def small(corpus: list[str]) -> list[str]:
    # Short docstrings (~35 kB): Unigram training time grows quickly with text size.
    return corpus[100:400]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_each_kind_trains_with_its_special_tokens(kind: str, corpus: list[str], tmp_path: Path):
    vocab_size = 400
    tokenizer = train_tokenizer(kind, vocab_size, small(corpus))
    for role in ("bos_id", "eos_id", "pad_id", "unk_id", "mask_id", "cls_id", "sep_id"):
        assert getattr(tokenizer, role) == EXPECTED_ROLES[kind].get(role), role
    assert tokenizer.vocab_size <= vocab_size
    reloaded = load_tokenizer(tokenizer.save(tmp_path))
    assert reloaded.roles == tokenizer.roles
    assert reloaded.sha256 == tokenizer.sha256
    assert reloaded.encode(corpus[0]) == tokenizer.encode(corpus[0])


def test_unigram_sentinels_sit_at_the_end_of_the_vocab_like_t5(corpus: list[str]):
    tokenizer = train_tokenizer("unigram", 400, small(corpus))
    size = tokenizer.vocab_size
    assert len(tokenizer.sentinel_ids) == NUM_SENTINELS
    # T5: <extra_id_0> is the last id, <extra_id_99> the first sentinel.
    assert tokenizer.sentinel_ids == list(range(size - 1, size - 1 - NUM_SENTINELS, -1))
    assert tokenizer.inner.id_to_token(size - 1) == "<extra_id_0>"


def test_separator_is_eos_else_sep(corpus: list[str]):
    assert train_tokenizer("bpe", 300, small(corpus)).separator_id == 2
    assert train_tokenizer("wordpiece", 300, small(corpus)).separator_id == 3


def test_byte_level_bpe_round_trips_text_exactly(bpe_dir: Path, corpus: list[str]):
    tokenizer = load_tokenizer(bpe_dir)
    samples = corpus[:50] + ["  leading spaces, tabs\t, CRLF\r\n", "naïve café — 東京 🚀", "\x00"]
    for text in samples:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode_batch(samples[:3]) == [tokenizer.encode(t) for t in samples[:3]]


def test_foreign_tokenizer_json_gets_roles_from_well_known_names(tmp_path: Path):
    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "<extra_id_1>": 3, "<extra_id_0>": 4}
    inner = HFTokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    inner.save(str(path))
    tokenizer = load_tokenizer(path)  # a file path, no special_tokens.json: GPT-2 style roles
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.separator_id) == (0, 0, 0)
    assert tokenizer.pad_id is None and tokenizer.mask_id is None
    assert tokenizer.sentinel_ids == [4, 3]
    assert tokenizer.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_special_tokens_json_overrides_inference(bpe_dir: Path, tmp_path: Path):
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    (tmp_path / "special_tokens.json").write_text(json.dumps({"eos": "<pad>"}))
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.eos_id == 1 and tokenizer.bos_id is None


@pytest.mark.parametrize("content", [None, "not json", '{"model": 3}'])
def test_missing_or_invalid_tokenizer_is_a_one_line_error(tmp_path: Path, content: str | None):
    if content is not None:
        (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(LmforgeError) as error:
        load_tokenizer(tmp_path)
    assert "\n" not in str(error.value) and "tokenizer" in str(error.value)


def test_tokenizer_without_separator_is_an_error():
    inner = HFTokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    from lmforge.data.tokenizer import Tokenizer

    with pytest.raises(LmforgeError, match="separator"):
        _ = Tokenizer(inner).separator_id


def test_wordpiece_lower_cases_unless_cased(corpus: list[str]):
    uncased = train_tokenizer("wordpiece", 400, small(corpus))
    cased = train_tokenizer("wordpiece", 400, small(corpus), cased=True)
    text = "The Python Language"
    assert uncased.decode(uncased.encode(text)) == "the python language"
    assert cased.decode(cased.encode(text)) == text


def test_cased_is_refused_for_kinds_that_always_keep_case(corpus: list[str]):
    with pytest.raises(LmforgeError, match="--cased is for wordpiece tokenizers; bpe ones"):
        train_tokenizer("bpe", 300, small(corpus), cased=True)
