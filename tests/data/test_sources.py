"""Document sources: spec forms, file formats, hf: through local files, encodings, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.data.sources import iter_documents
from lmforge.errors import LmforgeError

TEXT = "first line\nsecond line\n\n\nthird paragraph\n\nlast\n"


def texts(spec: str | Path, **kwargs) -> list[str]:
    return [d.text for d in iter_documents(str(spec), **kwargs)]


@pytest.mark.parametrize(
    ("split_by", "expected"),
    [
        ("file", [TEXT]),
        ("paragraph", ["first line\nsecond line", "third paragraph", "last"]),
        ("line", ["first line", "second line", "third paragraph", "last"]),
    ],
)
def test_text_split_modes(tmp_path: Path, split_by: str, expected: list[str]):
    (tmp_path / "a.txt").write_text(TEXT)
    with gzip.open(tmp_path / "b.txt.gz", "wt") as stream:
        stream.write(TEXT)
    assert texts(tmp_path / "a.txt", split_by=split_by) == expected
    assert texts(tmp_path / "b.txt.gz", split_by=split_by) == expected


def test_jsonl_plain_and_gzipped(tmp_path: Path):
    rows = [{"body": "one", "id": 1}, {"body": "two\n\nparagraphs", "id": 2}, {"body": ""}]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n"
    (tmp_path / "a.jsonl").write_text(lines)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as stream:
        stream.write(lines)
    # One document per record regardless of split_by; empty texts are skipped.
    assert texts(tmp_path / "a.jsonl", text_field="body") == ["one", "two\n\nparagraphs"]
    assert texts(tmp_path / "b.jsonl.gz", text_field="body") == ["one", "two\n\nparagraphs"]
    with pytest.raises(LmforgeError, match=r"no field 'text'.*\['body', 'id'\]"):
        texts(tmp_path / "a.jsonl")


def test_parquet_column_in_batches(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    values = [f"document {i}" for i in range(2500)]  # more than one 1024-row batch
    pq.write_table(pa.table({"content": values, "n": list(range(2500))}), tmp_path / "x.parquet")
    assert texts(tmp_path / "x.parquet", text_field="content") == values
    with pytest.raises(LmforgeError, match=r"no column 'text'.*'content'"):
        texts(tmp_path / "x.parquet")


def test_directory_and_glob_are_sorted_and_recursive(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "c.txt").write_text("c")
    (tmp_path / ".hidden").write_text("hidden")
    assert texts(tmp_path) == ["a", "b", "c"]
    assert texts(tmp_path / "*.txt") == ["a", "b"]


def test_hf_spec_through_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    data = tmp_path / "ds"
    data.mkdir()
    rows = [{"text": f"row {i}", "title": f"t{i}"} for i in range(5)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    expected = [r["text"] for r in rows]
    assert texts(f"hf:json:{data / 'train.jsonl'}") == expected  # packaged builder + data files
    assert texts(f"hf:{data}") == expected  # a local script-free dataset directory
    assert texts(f"hf:json:{data}/*.jsonl", text_field="title") == [r["title"] for r in rows]
    with pytest.raises(LmforgeError, match=r"no field 'body'.*\['text', 'title'\]"):
        texts(f"hf:{data}", text_field="body")
    with pytest.raises(LmforgeError, match="cannot load dataset hf:"):
        texts(f"hf:{tmp_path / 'no-such-dataset'}")


def test_python_docs_is_a_real_deterministic_corpus():
    first = texts("builtin:python-docs")
    assert first == texts("builtin:python-docs")
    assert len(set(first)) == len(first)
    size = sum(len(t.encode("utf-8")) for t in first)
    assert 1_000_000 < size < 3_000_000
    assert any("for" in t and "statement" in t for t in first[:100])  # pydoc topics come first


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path):
    (tmp_path / "x.txt").write_bytes("caf\xe9 ok\n\nna\xefve\n".encode("latin-1"))
    documents = list(iter_documents(str(tmp_path / "x.txt")))
    assert [d.text for d in documents] == ["caf\ufffd ok", "na\ufffdve"]
    assert sum(d.replaced_bytes for d in documents) == 2
    decoded = texts(tmp_path / "x.txt", encoding="latin-1")
    assert decoded == ["café ok", "naïve"]


def test_real_latin1_file(shared_data):
    path = shared_data("trec/TREC.train.all")
    replaced = sum(d.replaced_bytes for d in iter_documents(str(path), split_by="line"))
    assert replaced > 0
    latin1 = list(iter_documents(str(path), split_by="line", encoding="latin-1"))
    assert sum(d.replaced_bytes for d in latin1) == 0
    assert not any("\ufffd" in d.text for d in latin1)


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (None, "missing.txt", "does not exist"),
        (None, "*.nothing", "matches no files"),
        ("empty.txt", "empty.txt", "no documents"),
        ("blank.txt", "*.txt", "no documents"),
    ],
)
def test_input_errors(tmp_path: Path, make: str | None, spec: str, message: str):
    if make:
        (tmp_path / make).write_text("\n\n  \n")
    with pytest.raises(LmforgeError, match=message):
        texts(tmp_path / spec)


def test_unknown_encoding_and_builtin_are_errors(tmp_path: Path):
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(LmforgeError, match="--encoding"):
        texts(tmp_path / "a.txt", encoding="no-such-codec")
    with pytest.raises(LmforgeError, match="builtin:python-docs"):
        texts("builtin:nothing")
