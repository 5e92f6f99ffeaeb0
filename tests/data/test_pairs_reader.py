"""Reading (source, references) pairs: parallel files, tsv/csv, jsonl, SQuAD, plain lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.data.pairs import Seq2SeqExample, read_pairs
from lmforge.errors import LmforgeError
from tests.conftest import shared_file


def _head(source: Path, target: Path, count: int) -> None:
    lines = source.read_text(encoding="utf-8").split("\n")[:count]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_reads_a_slice_of_multi30k(tmp_path: Path) -> None:
    for lang in ("en", "de"):
        _head(shared_file(f"multi30k/train.{lang}"), tmp_path / f"train.{lang}", 100)
    examples = read_pairs(tmp_path / "train", source_lang="en", target_lang="de")
    assert len(examples) == 100
    assert examples[0] == Seq2SeqExample(
        "Two young, White males are outside near many bushes.",
        ["Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche."],
    )


def test_parallel_files_must_have_equal_line_counts(tmp_path: Path) -> None:
    (tmp_path / "x.en").write_text("a\nb\nc\n")
    (tmp_path / "x.de").write_text("A\nB\n")
    with pytest.raises(LmforgeError, match=r"x\.en has 3 lines but .*x\.de has 2") as error:
        read_pairs(tmp_path / "x", source_lang="en", target_lang="de")
    assert "\n" not in str(error.value)


def test_parallel_lines_split_only_on_newlines(tmp_path: Path) -> None:
    # U+2028 inside a sentence must not shift the alignment (str.splitlines would split there).
    (tmp_path / "x.en").write_text("one\u2028line\r\ntwo\r\n", encoding="utf-8")
    (tmp_path / "x.de").write_text("eins\nzwei\n", encoding="utf-8")
    examples = read_pairs(tmp_path / "x", source_lang="en", target_lang="de")
    assert [(e.source, e.references) for e in examples] == [
        ("one\u2028line", ["eins"]),
        ("two", ["zwei"]),
    ]


def test_predict_reads_parallel_sources_without_targets(tmp_path: Path) -> None:
    (tmp_path / "x.en").write_text("a\nb\n")
    examples = read_pairs(tmp_path / "x", source_lang="en", target_lang="de", require_targets=False)
    assert examples == [Seq2SeqExample("a", []), Seq2SeqExample("b", [])]
    with pytest.raises(LmforgeError, match=r"x\.de not found"):
        read_pairs(tmp_path / "x", source_lang="en", target_lang="de")
    (tmp_path / "new.txt").write_text("c\n")  # a plain file of sources, not a prefix
    examples = read_pairs(tmp_path / "new.txt", source_lang="en", target_lang="de",
                          require_targets=False)  # fmt: skip
    assert examples == [Seq2SeqExample("c", [])]


def test_reads_a_slice_of_scitldr(tmp_path: Path) -> None:
    _head(shared_file("scitldr/train.jsonl"), tmp_path / "train.jsonl", 20)
    examples = read_pairs(tmp_path / "train.jsonl")
    first = json.loads((tmp_path / "train.jsonl").read_text().split("\n")[0])
    assert len(examples) == 20
    assert examples[0].source == " ".join(s.strip() for s in first["source"])
    assert examples[0].references == first["target"]
    assert all("\n" not in e.source and len(e.references) == 1 for e in examples)


def test_jsonl_list_targets_are_several_references(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    rows = [{"text": "x", "tldr": ["first", "second"], "id": 7}, {"text": "y", "tldr": "only"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    examples = read_pairs(path, source_field="text", target_field="tldr")
    assert examples == [
        Seq2SeqExample("x", ["first", "second"], id="7"),
        Seq2SeqExample("y", ["only"]),
    ]


def test_several_target_fields_are_several_references(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"dialogue": "d", "summary1": "a", "summary2": "b"}) + "\n")
    examples = read_pairs(path, source_field="dialogue", target_field="summary1,summary2")
    assert examples == [Seq2SeqExample("d", ["a", "b"])]


def test_missing_jsonl_field_names_the_line_and_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"source": "a", "target": "b"}\n{"source": "c", "summary": "d"}\n')
    with pytest.raises(LmforgeError, match=r"bad\.jsonl line 2 has no field 'target' "
                       r"\(fields: source, summary\)"):  # fmt: skip
        read_pairs(path)
    assert read_pairs(path, require_targets=False)[1] == Seq2SeqExample("c", [])


def test_tsv_with_two_columns_or_a_header(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tsv"
    plain.write_text('Hello "world"\tHallo Welt\nGood night\tGute Nacht\n')
    assert read_pairs(plain) == [
        Seq2SeqExample('Hello "world"', ["Hallo Welt"]),  # tsv is unquoted: quotes are text
        Seq2SeqExample("Good night", ["Gute Nacht"]),
    ]
    header = tmp_path / "header.tsv"
    header.write_text("id\tde\ten\n1\tHallo\tHello\n")
    examples = read_pairs(header, source_field="en", target_field="de")
    assert examples == [Seq2SeqExample("Hello", ["Hallo"])]


def test_csv_is_quoted(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('source,target\n"a, b","c ""d"""\n')
    assert read_pairs(path) == [Seq2SeqExample("a, b", ['c "d"'])]


def test_tsv_row_without_target_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "short.tsv"
    path.write_text("a\tb\nonly a source\n")
    with pytest.raises(LmforgeError, match=r"short\.tsv line 2 has 1 column\(s\)"):
        read_pairs(path)


def test_plain_text_is_for_prediction_only(tmp_path: Path) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("first source\nsecond source\n")
    assert [e.source for e in read_pairs(path, require_targets=False)] == [
        "first source",
        "second source",
    ]
    with pytest.raises(LmforgeError, match="cannot tell the format"):
        read_pairs(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="not found"):
        read_pairs(tmp_path / "absent.jsonl")


def test_squad_questions_become_question_context_sources(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.data.squad")
    context = "Denver won Super Bowl 50."
    squad = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who won?",
                                "answers": [
                                    {"text": "Denver", "answer_start": 0},
                                    {"text": "Denver", "answer_start": 0},
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad))
    assert read_pairs(path) == [
        Seq2SeqExample(
            f"question: Who won? context: {context}",
            ["Denver", "Denver"],
            id="q1",
            group="Super_Bowl_50",
        )
    ]
