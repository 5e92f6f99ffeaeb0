"""CoNLL token-per-line files and the tag schemes of named-entity data.

Format (CoNLL-2000/2003): one token per line, whitespace-separated columns, the word first and the
tag last (CoNLL-2003 has `word POS chunk NER`); a blank line ends a sentence; `-DOCSTART-` lines
mark documents and are skipped.

    EU NNP I-NP I-ORG          <- IOB1: I- everywhere, B- only between two adjacent
    rejects VBZ I-VP O            entities of one type (the original CoNLL-2003 files)
    German JJ I-NP I-MISC      <- BIO2 would write B-ORG, B-MISC: every entity starts with B-

Schemes: IOB1 (Ramshaw & Marcus 1995, CoNLL-2003), BIO2 (every entity starts with B-; what models
are trained on) and IOBES (B- I- E- for multi-token entities, S- for single tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.records import read_text  # also imported from here by lmforge.tasks.ner
from lmforge.errors import LmforgeError

SCHEMES: tuple[str, ...] = ("iob1", "bio2", "iobes")
DOCSTART = "-DOCSTART-"
_TAG = re.compile(r"O|[BIES]-\S+")


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str]
    """One tag per word, as written in the file; empty for files without a tag column."""


def read_conll(path: str | Path, *, require_tags: bool = True) -> list[TaggedSentence]:
    """The sentences of a CoNLL file, in file order (see `parse_conll`)."""
    return parse_conll(read_text(path), path, require_tags=require_tags)


def parse_conll(text: str, path: str | Path, *, require_tags: bool = True) -> list[TaggedSentence]:
    """The sentences of CoNLL `text` read from `path` (named in error messages).

    Every token line must have as many columns as the file's first token line. With
    `require_tags=False` single-column files (words only) are accepted and give empty `tags`;
    files of two or more columns always have their last column checked as a tag.
    """
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    num_columns = 0
    first_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:
            if words:
                sentences.append(TaggedSentence(words, tags))
                words, tags = [], []
            continue
        if not num_columns:
            num_columns, first_line = len(fields), number
            _check_has_tags(path, number, num_columns, require_tags)
        if len(fields) != num_columns:
            raise LmforgeError(
                f"{path}:{number}: {len(fields)} columns, but the first token line ({first_line}) "
                f"has {num_columns}; every token line needs the same columns, the word first and "
                "the tag last"
            )
        words.append(fields[0])
        if num_columns > 1:
            tags.append(_checked_tag(fields[-1], path, number))
    if words:
        sentences.append(TaggedSentence(words, tags))
    return sentences


def looks_like_conll(text: str) -> bool:
    """Whether `text` is CoNLL rather than plain text (one sentence per line): it has -DOCSTART-
    lines, or one word per line, or the same number of columns on every line with a tag last."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if any(fields[0] == DOCSTART for fields in rows):
        return True
    if not rows or len({len(fields) for fields in rows}) != 1:
        return False
    return len(rows[0]) == 1 or all(_TAG.fullmatch(fields[-1]) for fields in rows)


def _check_has_tags(path: str | Path, number: int, num_columns: int, require_tags: bool) -> None:
    if num_columns == 1 and require_tags:
        raise LmforgeError(
            f"{path}:{number}: only one column; a CoNLL file needs the word first and the "
            "tag last on every token line (e.g. `Paris B-LOC`)"
        )


def _checked_tag(tag: str, path: str | Path, number: int) -> str:
    if not _TAG.fullmatch(tag):
        raise LmforgeError(
            f"{path}:{number}: {tag!r} is not a tag; the last column must be O or "
            "B-/I-/E-/S- followed by the entity type (e.g. B-PER)"
        )
    return tag


# --- schemes ------------------------------------------------------------------------------------


def _split(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for "O"."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def detect_scheme(sentences: list[TaggedSentence]) -> str:
    """Scheme of tagged sentences: "iobes" if any tag is E- or S-; "iob1" if some entity
    starts with I- (at the start of a sentence, after O or after another type); else "bio2"
    (also for a file without entities)."""
    is_iob1 = False
    for sentence in sentences:
        previous = "O"
        for tag in sentence.tags:
            prefix, kind = _split(tag)
            if prefix in ("E", "S"):
                return "iobes"
            if prefix == "I" and _split(previous)[1] != kind:
                is_iob1 = True
            previous = tag
    return "iob1" if is_iob1 else "bio2"


def iob1_to_bio2(tags: list[str]) -> list[str]:
    """I-X that starts an entity (after O, another type or at the start) becomes B-X."""
    return _retag_entity_starts(tags, "I", "B")


def bio2_to_iob1(tags: list[str]) -> list[str]:
    """B-X stays B-X only right after a token of type X (two adjacent entities); else I-X."""
    return _retag_entity_starts(tags, "B", "I")


def _retag_entity_starts(tags: list[str], old: str, new: str) -> list[str]:
    """`old`-X becomes `new`-X where it starts an entity (at the start, after O or after another
    type): IOB1 and BIO2 differ only in the prefix written there."""
    out = []
    for i, tag in enumerate(tags):
        prefix, kind = _split(tag)
        if prefix == old and (i == 0 or _split(tags[i - 1])[1] != kind):
            tag = f"{new}-{kind}"
        out.append(tag)
    return out


def iobes_to_bio2(tags: list[str]) -> list[str]:
    """S-X -> B-X, E-X -> I-X."""
    replace = {"S": "B", "E": "I"}
    out = []
    for tag in tags:
        prefix, kind = _split(tag)
        out.append(f"{replace[prefix]}-{kind}" if prefix in replace else tag)
    return out


def bio2_to_iobes(tags: list[str]) -> list[str]:
    """The last token of an entity becomes E-X (S-X for a single token)."""
    out = []
    for i, tag in enumerate(tags):
        prefix, kind = _split(tag)
        is_last = i + 1 == len(tags) or tags[i + 1] != f"I-{kind}"
        if prefix in ("B", "I") and is_last:
            tag = f"{'S' if prefix == 'B' else 'E'}-{kind}"
        out.append(tag)
    return out


def to_bio2(tags: list[str], scheme: str) -> list[str]:
    """Tags of `scheme` ("iob1", "bio2", "iobes") in BIO2."""
    if scheme == "iob1":
        return iob1_to_bio2(tags)
    if scheme == "iobes":
        return iobes_to_bio2(tags)
    return list(tags)


def from_bio2(tags: list[str], scheme: str) -> list[str]:
    """BIO2 tags written in `scheme`."""
    if scheme == "iob1":
        return bio2_to_iob1(tags)
    if scheme == "iobes":
        return bio2_to_iobes(tags)
    return list(tags)
