"""The shared reading of labelled-data files: decoding and JSON-lines records."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lmforge.data.records import jsonl_records, read_text, text_lines
from lmforge.errors import LmforgeError


def test_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\nok,1\n".encode("utf-8-sig"))
    assert read_text(path) == "text,label\nok,1\n"


def test_latin1_file_is_read_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("DESC:def What is a café ?\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="lmforge.data.records"):
        assert read_text(path) == "DESC:def What is a café ?\n"
    assert "latin1.txt is not valid UTF-8; reading it as Latin-1" in caplog.text


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match=r"cannot read .*absent\.txt"):
        read_text(tmp_path / "absent.txt")


def test_lines_split_on_newlines_only() -> None:
    assert text_lines("a\r\nb\u2028c\n\nd\n") == ["a", "b\u2028c", "", "d"]


def test_blank_lines_are_skipped_and_numbers_kept() -> None:
    text = '{"a": 1}\n\n   \n{"a": "x\u2028y"}\n'
    assert list(jsonl_records(text, "f.jsonl")) == [(1, {"a": 1}), (4, {"a": "x\u2028y"})]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", r"^f\.jsonl:2: not valid JSON \(.+\)$"),
        ("[1, 2]", r"^f\.jsonl:2: expected a JSON object per line$"),
    ],
)
def test_bad_line_is_a_one_line_error_naming_file_and_line(line: str, expected: str) -> None:
    with pytest.raises(LmforgeError, match=expected):
        list(jsonl_records(f'{{"a": 1}}\n{line}\n', "f.jsonl"))
