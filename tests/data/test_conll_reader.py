"""CoNLL files: sentences, -DOCSTART- lines, column and tag checks, encodings, tag schemes, and the
shared CoNLL-2003 files."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from lmforge.data.conll import (
    TaggedSentence,
    bio2_to_iob1,
    bio2_to_iobes,
    detect_scheme,
    from_bio2,
    iob1_to_bio2,
    iobes_to_bio2,
    looks_like_conll,
    read_conll,
    to_bio2,
)
from lmforge.errors import LmforgeError
from lmforge.evaluation.seqeval import extract_entities
from tests.conftest import shared_file

IOB1 = "I-ORG O I-MISC I-MISC B-MISC O I-PER".split()
BIO2 = "B-ORG O B-MISC I-MISC B-MISC O B-PER".split()


def _write(tmp_path: Path, text: str, name: str = "data.conll") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_sentences_and_skips_docstart_even_at_the_end(tmp_path: Path) -> None:
    text = (
        "-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\n\nPeter NNP B-PER\n\n-DOCSTART- -X- O"
    )
    sentences = read_conll(_write(tmp_path, text))
    assert sentences == [
        TaggedSentence(["EU", "rejects"], ["B-ORG", "O"]),
        TaggedSentence(["Peter"], ["B-PER"]),
    ]


def test_docstart_ends_a_sentence_and_tabs_and_crlf_are_whitespace(tmp_path: Path) -> None:
    text = "EU\tB-ORG\r\nrejects\tO\r\n-DOCSTART-\tO\r\nPeter\tB-PER"
    sentences = read_conll(_write(tmp_path, text))
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter"]]


def test_column_count_change_names_file_line_and_counts(tmp_path: Path) -> None:
    path = _write(tmp_path, "EU NNP B-ORG\nrejects VBZ O\n\nPeter B-PER\n")
    with pytest.raises(LmforgeError) as error:
        read_conll(path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: 2 columns, but the first token line (1) has 3")
    assert "\n" not in message


def test_a_bad_tag_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "EU B-ORG\nrejects VBZ\n")
    with pytest.raises(LmforgeError, match=rf"^{path}:2: 'VBZ' is not a tag"):
        read_conll(path)


def test_a_single_column_is_words_only_where_tags_are_optional(tmp_path: Path) -> None:
    path = _write(tmp_path, "EU\nrejects\n\nPeter\n")
    with pytest.raises(LmforgeError, match=rf"^{path}:1: only one column"):
        read_conll(path)
    sentences = read_conll(path, require_tags=False)
    assert sentences == [TaggedSentence(["EU", "rejects"], []), TaggedSentence(["Peter"], [])]


def test_latin1_file_is_read_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "latin1.conll"
    path.write_bytes("Müller B-PER\nsagt O\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="lmforge.data.conll"):
        sentences = read_conll(path)
    assert sentences[0].words == ["Müller", "sagt"]
    assert "not valid UTF-8" in caplog.text


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="cannot read"):
        read_conll(tmp_path / "absent.conll")


def test_iob1_and_bio2_convert_both_ways() -> None:
    assert iob1_to_bio2(IOB1) == BIO2
    assert bio2_to_iob1(BIO2) == IOB1
    assert to_bio2(IOB1, "iob1") == BIO2 and from_bio2(BIO2, "iob1") == IOB1
    assert to_bio2(BIO2, "bio2") == BIO2 == from_bio2(BIO2, "bio2")
    # A BIO2 sequence is already valid IOB1 input: the conversion leaves it unchanged.
    assert iob1_to_bio2(BIO2) == BIO2


def test_conversions_keep_the_entities() -> None:
    iobes = bio2_to_iobes(BIO2)
    assert iobes == "S-ORG O B-MISC E-MISC S-MISC O S-PER".split()
    assert iobes_to_bio2(iobes) == BIO2
    assert extract_entities(IOB1) == extract_entities(BIO2) == extract_entities(iobes)


@pytest.mark.parametrize(
    ("tags", "scheme"),
    [
        (IOB1, "iob1"),
        (BIO2, "bio2"),
        ("O B-PER I-PER I-LOC".split(), "iob1"),  # I- after another type starts an entity
        ("O B-PER E-PER".split(), "iobes"),
        ("O O".split(), "bio2"),
    ],
)
def test_detects_the_scheme(tags: list[str], scheme: str) -> None:
    assert detect_scheme([TaggedSentence(["w"] * len(tags), tags)]) == scheme


def test_tells_conll_from_plain_text() -> None:
    assert looks_like_conll("EU B-ORG\nrejects O\n\nPeter B-PER\n")
    assert looks_like_conll("EU\nrejects\n\nPeter\n")
    assert looks_like_conll("-DOCSTART- -X- O\n\nEU\n")
    assert not looks_like_conll("EU rejects German call\nPeter Blackburn\n")
    assert not looks_like_conll("EU rejects\nPeter Blackburn\n")  # two columns, no tag last
    assert not looks_like_conll("")


def test_conll2003_train_first_sentences(tmp_path: Path) -> None:
    lines = shared_file("conll2003/eng.train").read_text().splitlines()[:40]
    sentences = read_conll(_write(tmp_path, "\n".join(lines), "eng.train.head"))
    assert sentences[0] == TaggedSentence(
        "EU rejects German call to boycott British lamb .".split(),
        "I-ORG O I-MISC O O O I-MISC O O".split(),
    )
    assert sentences[1] == TaggedSentence(["Peter", "Blackburn"], ["I-PER", "I-PER"])
    assert sentences[2] == TaggedSentence(["BRUSSELS", "1996-08-22"], ["I-LOC", "O"])
    assert detect_scheme(sentences) == "iob1"


def test_conll2003_test_file_matches_the_published_statistics() -> None:
    # eng.testb's first -DOCSTART- line sits at the very end, without a final newline.
    sentences = read_conll(shared_file("conll2003/eng.testb"))
    assert len(sentences) == 3453
    assert sum(len(s.words) for s in sentences) == 46435
    entities = Counter(kind for s in sentences for kind, _, _ in extract_entities(s.tags))
    assert entities == {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}
    bio2 = Counter(
        kind for s in sentences for kind, _, _ in extract_entities(to_bio2(s.tags, "iob1"))
    )
    assert bio2 == entities
    assert detect_scheme(sentences) == "iob1"
