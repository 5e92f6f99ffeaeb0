"""Fixtures shared by all tests: seeded generators, the shared datasets, a small prepared corpus."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
"""../shared/data beside the repository (present in CI; absent in a user's clone)."""

TINY_MODEL = [
    "--model.d_model=32",
    "--model.num_heads=2",
    "--model.num_layers=2",
    "--model.d_ff=64",
    "--train.seq_len=32",
    "--log.progress=false",
    "--log.tensorboard=false",
    "--log.every=1",
]
"""Overrides that shrink any preset to a test-sized model (2 layers, width 32)."""


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or a clean skip where that folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not found: the shared datasets sit beside the repository only in CI")
    return path


# Test models are tiny (width 32): one thread runs them as fast as two on an idle machine, and on a
# busy one a second thread that waits for the first makes every step many times slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    default_dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(default_dtype)


def _prepare_python_docs(root: Path, kind: str, vocab_size: int) -> Path:
    from lmforge.data.prepare import prepare_data
    from lmforge.data.sources import iter_documents
    from lmforge.data.tokenizer import train_tokenizer

    documents = (
        d.text for _, d in zip(range(1500), iter_documents("builtin:python-docs"), strict=False)
    )
    tokenizer_dir = train_tokenizer(kind, vocab_size, documents).save(root / "tokenizer")
    prepare_data(
        ["builtin:python-docs"],
        tokenizer_dir,
        root / "data",
        workers=1,
        val_fraction=0.02,
        progress=False,
    )
    return root / "data"


@pytest.fixture(scope="session")
def python_docs_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python's own documentation (builtin:python-docs), BPE-tokenized (vocab 512) and prepared."""
    return _prepare_python_docs(tmp_path_factory.mktemp("python-docs"), "bpe", 512)


@pytest.fixture(scope="session")
def python_docs_unigram_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same corpus with a T5-style unigram tokenizer (vocab 600, 100 sentinels)."""
    return _prepare_python_docs(tmp_path_factory.mktemp("python-docs-unigram"), "unigram", 600)


_PRETRAINED_TOKENIZER = {"bert": "wordpiece", "roberta": "bpe", "gpt2": "bpe", "bloom": "bpe",
                         "llama": "bpe", "t5": "unigram", "bart": "bpe"}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """`tiny_pretrained("bert-tiny")` -> a run directory holding a randomly initialised,
    test-sized model of that preset (2 layers, width 32) as a step-0 checkpoint, with its
    tokenizer (trained on Python's docs: wordpiece, bpe or unigram as the family uses) and
    config.yaml, laid out exactly like a pretraining run. Built once per preset per session."""
    import yaml

    from lmforge.config.loading import load_run_config, to_dict
    from lmforge.data.sources import iter_documents
    from lmforge.data.tokenizer import train_tokenizer
    from lmforge.models.lm import build_model
    from lmforge.run_dir import token_ids
    from lmforge.training.checkpoint import save_checkpoint

    built: dict[str, Path] = {}

    def make(preset: str) -> Path:
        if preset in built:
            return built[preset]
        root = tmp_path_factory.mktemp(f"pretrained-{preset}")
        kind = _PRETRAINED_TOKENIZER[preset.split("-")[0]]
        documents = (
            d.text for _, d in zip(range(800), iter_documents("builtin:python-docs"), strict=False)
        )
        tokenizer = train_tokenizer(kind, 600 if kind == "unigram" else 512, documents)
        tokenizer.save(root)
        overrides = {
            "model.d_model": "32", "model.num_heads": "2", "model.num_layers": "2",
            "model.d_ff": "64", "model.vocab_size": str(tokenizer.vocab_size),
            "run.dir": str(root), "data.path": "-",
        }  # fmt: skip
        if preset.startswith("t5"):
            overrides["objective.kind"] = "span_corruption"
        elif preset.startswith("bart"):
            overrides["objective.kind"] = "bart_denoising"
        config = load_run_config(preset, overrides)
        # The special token ids a pretraining run stores (see training/run.py).
        tokens = token_ids(tokenizer, config.model.family, config.objective.kind)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, tokens=tokens))
        torch.manual_seed(0)
        model = build_model(config.model)
        (root / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        save_checkpoint(root, 0, model, None, {}, to_dict(config.model), keep_last=1)
        built[preset] = root
        return root

    return make
