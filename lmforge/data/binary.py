"""Telling text files from binary ones (images, archives, random bytes) before reading them as text.

A file is not text when the start of it, decoded with the encoding the user gave, holds a NUL
character, or control characters other than whitespace for more than a tenth of the characters
that decoded: text has almost none, random bytes about a fifth (a quarter read as Latin-1, whose
C1 range is control characters too). Undecodable bytes do not count either way: text in another
encoding has many (a Latin-1 file read as UTF-8, GBK even more), and for those the remedy is
`--encoding`, not skipping the file. The policy that applies this is in `sources.py`.
"""

from __future__ import annotations

import codecs
import gzip
import unicodedata
from pathlib import Path

SNIFF_BYTES = 8192
"""How much of a file (after gunzip) is looked at."""
MAX_CONTROL_SHARE = 0.1
"""Share of control characters among the decoded characters above which a file is not text."""


def looks_binary(file: Path, encoding: str) -> bool:
    """Whether `file` is not text (see the module docstring); `.gz` files are looked into."""
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rb") as raw:
        sample = raw.read(SNIFF_BYTES)
    # Incremental: a multi-byte character cut at the end of the sample is not an error.
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample)
    if "\x00" in text:
        return True
    decoded = len(text) - text.count("\ufffd")
    return sum(map(_is_control, text)) > MAX_CONTROL_SHARE * decoded


def _is_control(char: str) -> bool:
    return char not in "\t\n\r\f\v" and unicodedata.category(char) == "Cc"
