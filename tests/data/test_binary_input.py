"""Input that is not text: skipped per file with a count and the names (refused when it is the
only file named), and `tokenizer train` reports replaced bytes and skipped files; `datasets` is
never allowed to run a loading script."""

from __future__ import annotations

import gzip
import random
import sys
import types
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.data.binary import looks_binary
from lmforge.data.prepare import prepare_data
from lmforge.data.sources import iter_documents
from lmforge.errors import LmforgeError

# The start of a real PNG file: signature, then the IHDR chunk (its length field holds NULs).
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00"


def _random_bytes(size: int, *, without_nul: bool = False) -> bytes:
    generator = random.Random(0)
    data = bytes(generator.randrange(256) for _ in range(size))
    return data.replace(b"\x00", b"\x01") if without_nul else data


@pytest.fixture
def mixed_folder(tmp_path: Path, paragraphs: list[str]) -> Path:
    """Two text files, a PNG, random bytes and gzipped random bytes."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(paragraphs[:40]) + "\n")
    (folder / "b.md").write_text("\n\n".join(paragraphs[40:80]) + "\n")
    (folder / "logo.png").write_bytes(PNG + _random_bytes(2000))
    (folder / "noise.bin").write_bytes(_random_bytes(3000, without_nul=True))
    (folder / "noise.txt.gz").write_bytes(gzip.compress(_random_bytes(3000)))
    return folder


_SAMPLES = {
    "png": (PNG + b"rest", "utf-8", True),
    "random-utf8": (_random_bytes(4000, without_nul=True), "utf-8", True),
    "random-latin1": (_random_bytes(4000, without_nul=True), "latin-1", True),  # C1 controls too
    "text": (b"plain text\twith tabs\r\nand lines\f\n", "utf-8", False),
    "latin1-as-utf8": (("café naïve " * 50).encode("latin-1"), "utf-8", False),  # an encoding issue
    "gbk-as-utf8": (("中文文本 " * 300).encode("gbk"), "utf-8", False),  # mostly undecodable
    "cut-at-8kb": (("日本語のテキスト " * 300).encode()[:8193], "utf-8", False),
    "utf16": (("text in utf-16 " * 20).encode("utf-16"), "utf-16", False),  # NUL bytes only
    "empty": (b"", "utf-8", False),
}


@pytest.mark.parametrize(("content", "encoding", "binary"), _SAMPLES.values(), ids=_SAMPLES.keys())
def test_looks_binary(tmp_path: Path, content: bytes, encoding: str, binary: bool):
    (tmp_path / "f").write_bytes(content)
    assert looks_binary(tmp_path / "f", encoding) is binary


def test_binary_files_in_a_folder_are_skipped_and_named(mixed_folder: Path, caplog):
    skipped: list[str] = []
    documents = list(iter_documents(str(mixed_folder), binary_files=skipped))
    assert {Path(d.source).name for d in documents} == {"a.txt", "b.md"}
    assert sum(d.replaced_bytes for d in documents) == 0  # no garbage reached the text
    assert [Path(name).name for name in skipped] == ["logo.png", "noise.bin", "noise.txt.gz"]
    assert "logo.png is not text" in caplog.text


def test_a_binary_file_named_alone_is_refused(mixed_folder: Path):
    with pytest.raises(LmforgeError, match=r"logo.png is not text: binary data"):
        list(iter_documents(str(mixed_folder / "logo.png")))


def test_prepare_skips_binary_files_with_a_count_and_names(mixed_folder, bpe_dir, tmp_path, caplog):
    manifest = prepare_data([str(mixed_folder)], bpe_dir, tmp_path / "data", workers=1,
                            val_fraction=0, progress=False)  # fmt: skip
    assert [Path(name).name for name in manifest["binary_files_skipped"]] == [
        "logo.png", "noise.bin", "noise.txt.gz"
    ]  # fmt: skip
    assert manifest["replaced_bytes"] == 0
    assert "skipped 3 file(s) that are not text: " in caplog.text
    assert "--encoding latin-1" not in caplog.text  # binary data is no encoding problem


def test_tokenizer_train_reports_skipped_files_and_replaced_bytes(
    mixed_folder: Path, tmp_path: Path, capsys
):
    (mixed_folder / "latin.txt").write_bytes("caf\xe9 na\xefve\n".encode("latin-1") * 20)
    argv = ["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--input",
            str(mixed_folder), "--out", str(tmp_path / "tok"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "skipped 3 file(s) that are not text: " in err and "logo.png" in err
    latin = mixed_folder / "latin.txt"
    assert f"40 bytes were not valid utf-8 and became U+FFFD, in {latin}" in err
    assert "--encoding latin-1" in err


@pytest.mark.parametrize("has_argument", [True, False])
def test_load_dataset_never_trusts_remote_code(monkeypatch, has_argument: bool):
    """datasets 2.x takes trust_remote_code (False is passed); datasets >= 4 has no such
    argument (none is passed, which it would refuse)."""
    calls = []

    def with_argument(path, name=None, *, split=None, streaming=False, trust_remote_code=None,
                      **kwargs):  # fmt: skip
        calls.append({"trust_remote_code": trust_remote_code, **kwargs})
        return iter([{"text": "a row"}])

    def without_argument(path, name=None, *, split=None, streaming=False, **kwargs):
        assert "trust_remote_code" not in kwargs
        calls.append(kwargs)
        return iter([{"text": "a row"}])

    fake = types.ModuleType("datasets")
    fake.load_dataset = with_argument if has_argument else without_argument
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert [d.text for d in iter_documents("hf:someone/corpus")] == ["a row"]
    assert calls == ([{"trust_remote_code": False}] if has_argument else [{}])
