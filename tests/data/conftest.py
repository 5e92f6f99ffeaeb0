"""Shared fixtures for the data tests: small real text and a tokenizer trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.data.sources import iter_documents
from lmforge.data.tokenizer import Tokenizer, train_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared beside the repo
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"


def _python_docs_sample(limit: int = 400) -> list[str]:
    documents = iter_documents("builtin:python-docs")
    return [d.text for _, d in zip(range(limit), documents, strict=False)]


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """A few hundred real English documents (Python's own docs: always available)."""
    return _python_docs_sample()


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """A saved byte-level BPE tokenizer; vocab 1000 keeps training well under a second."""
    tokenizer: Tokenizer = train_tokenizer("bpe", 1000, corpus)
    return tokenizer.save(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="session")
def paragraphs(corpus: list[str]) -> list[str]:
    """60 documents without blank lines, so that paragraph splitting gives them back."""
    whole = [t for t in corpus if all(line.strip() for line in t.splitlines())]
    return whole[:60]


@pytest.fixture
def text_file(tmp_path: Path, paragraphs: list[str]) -> Path:
    """60 paragraphs separated by blank lines."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def shared_data():
    """Returns a path under ../shared/data, skipping the test with the reason when absent."""

    def get(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.exists():
            pytest.skip(f"{path} is absent (the shared offline datasets are not mounted here)")
        return path

    return get
