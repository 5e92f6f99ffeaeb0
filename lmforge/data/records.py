"""Reading the text and the JSON-lines records of labelled-data files, shared by the readers.

Files are decoded as UTF-8 (a leading byte-order mark dropped); a file that is not valid UTF-8 is
read as Latin-1 instead, with a warning: some classic datasets (TREC's train files, old CoNLL
copies) are Latin-1, and every byte sequence is valid Latin-1, so reading never fails on bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from lmforge.errors import LmforgeError

T = TypeVar("T")

logger = logging.getLogger(__name__)


def read_text(path: str | Path) -> str:
    """The text of a file: UTF-8 without a byte-order mark, else Latin-1 (with a warning)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise LmforgeError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        # utf-8-sig: a BOM (Windows editors write one) would otherwise stick to the first field.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("%s is not valid UTF-8; reading it as Latin-1", path)
        return data.decode("latin-1")


def text_lines(text: str) -> list[str]:
    """Lines without their endings (\\n or \\r\\n). Split on newlines only: str.splitlines would
    also split on U+2028 and friends, which may occur inside a sentence or a JSON string, and
    would break the alignment of parallel files."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def jsonl_records(text: str, path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSON-lines `text` read from `path`; a
    line that is not a JSON object is a one-line error naming `path` and the line."""
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise LmforgeError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise LmforgeError(f"{path}:{number}: expected a JSON object per line")
        yield number, record


def split_by_group(
    examples: list[T], fraction: float, groups: list[object], noun: str
) -> tuple[list[T], list[T]]:
    """(train, validation): the last round(fraction * groups), at least one, go to validation
    whole. A group is a run of equal `groups` values in file order (SQuAD's articles), so nothing
    of one is seen in both splits; deterministic."""
    if fraction <= 0:
        return examples, []
    starts = [i for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    num_validation = max(1, round(fraction * len(starts)))
    if num_validation >= len(starts):
        raise LmforgeError(
            f"validation_split={fraction} leaves no training {noun} ({len(starts)} {noun}s); "
            "lower data.validation_split or give data.validation"
        )
    cut = starts[len(starts) - num_validation]
    return examples[:cut], examples[cut:]
