"""prepare_data: round trips, determinism across worker counts, splits, shards, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.prepare import prepare_data
from lmforge.data.shards import TokenDataset, read_manifest
from lmforge.data.sources import iter_documents
from lmforge.data.tokenizer import load_tokenizer
from lmforge.errors import LmforgeError


def prepare(inputs, tokenizer, out, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("progress", False)
    return prepare_data([str(i) for i in inputs], tokenizer, out, **kwargs)


def shard_bytes(data_dir: Path) -> dict[str, bytes]:
    files = sorted(p for p in data_dir.rglob("shard-*") if p.is_file())
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in files}


def stored_documents(data_dir: Path) -> dict[str, list[str]]:
    tokenizer = load_tokenizer(data_dir)
    return {
        split: [tokenizer.decode(ds.document(i)) for i in range(len(ds))]
        for split in ("train", "val")
        for ds in [TokenDataset(data_dir, split)]
    }


def test_round_trip_and_worker_count_does_not_change_bytes(text_file, bpe_dir, tmp_path):
    one = prepare([text_file], bpe_dir, tmp_path / "one", val_fraction=0.2, shard_tokens=300)
    prepare([text_file], bpe_dir, tmp_path / "two", workers=2, val_fraction=0.2, shard_tokens=300)
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    assert len(one["splits"]["train"]["shards"]) > 1  # documents spread over several shards
    stored = stored_documents(tmp_path / "one")
    documents = [d.text for d in iter_documents(str(text_file))]
    assert sorted(stored["train"] + stored["val"]) == sorted(documents)
    assert stored["val"] and stored["train"]
    # Each split keeps input order.
    train_positions = [documents.index(text) for text in stored["train"]]
    assert train_positions == sorted(train_positions)


def test_manifest_and_stream_layout(text_file, bpe_dir, tmp_path):
    manifest = prepare([text_file], bpe_dir, tmp_path / "d", val_fraction=0.2)
    assert manifest == read_manifest(tmp_path / "d")
    tokenizer = load_tokenizer(bpe_dir)
    assert manifest["dtype"] == "uint16" and manifest["separator_id"] == tokenizer.eos_id
    assert manifest["tokenizer_sha256"] == tokenizer.sha256 == load_tokenizer(tmp_path / "d").sha256
    train = TokenDataset(tmp_path / "d", "train")
    stream = train.tokens(0, train.num_tokens)
    assert (stream == train.separator_id).sum() == train.num_documents
    assert stream[-1] == train.separator_id
    first = train.document(0)
    assert np.array_equal(stream[: len(first)], first)
    text = [d.text for d in iter_documents(str(text_file))]
    assert sum(s["num_bytes"] for s in manifest["splits"].values()) == sum(
        len(t.encode()) for t in text
    )
    assert 0 < train.tokens_per_byte < 1


def test_hash_split_is_deterministic_and_tail_split_takes_the_last_documents(
    text_file, bpe_dir, tmp_path
):
    prepare([text_file], bpe_dir, tmp_path / "a", val_fraction=0.3)
    prepare([text_file], bpe_dir, tmp_path / "b", val_fraction=0.3)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    prepare([text_file], bpe_dir, tmp_path / "tail", val_fraction=0.1, split="tail")
    documents = [d.text for d in iter_documents(str(text_file))]
    stored = stored_documents(tmp_path / "tail")
    sizes = [len(d.encode()) for d in documents]
    # nanoGPT's convention: val starts with the first document at or past 90% of the bytes.
    first_val = next(i for i in range(len(sizes)) if sum(sizes[:i]) >= 0.9 * sum(sizes))
    assert stored == {"train": documents[:first_val], "val": documents[first_val:]}


def test_latin1_replacements_are_counted_and_encoding_option_decodes(bpe_dir, tmp_path, caplog):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n\nna\xefve na\xefve\n\nplain\n".encode("latin-1"))
    manifest = prepare([path], bpe_dir, tmp_path / "utf8", val_fraction=0)
    assert manifest["replaced_bytes"] == 3
    assert manifest["files_with_replacements"] == {str(path): 3}
    assert "--encoding latin-1" in caplog.text
    manifest = prepare([path], bpe_dir, tmp_path / "latin1", val_fraction=0, encoding="latin-1")
    assert manifest["replaced_bytes"] == 0
    assert stored_documents(tmp_path / "latin1")["train"] == ["café", "naïve naïve", "plain"]


def test_real_latin1_file_through_prepare(bpe_dir, tmp_path, shared_data):
    path = shared_data("trec/TREC.train.all")
    manifest = prepare([path], bpe_dir, tmp_path / "trec", val_fraction=0, split_by="line")
    assert manifest["replaced_bytes"] > 0
    manifest = prepare(
        [path], bpe_dir, tmp_path / "trec1", val_fraction=0, split_by="line", encoding="latin-1"
    )
    assert manifest["replaced_bytes"] == 0 and manifest["splits"]["train"]["num_documents"] > 5000


def test_large_vocab_uses_uint32(corpus, tmp_path, text_file):
    from lmforge.data.tokenizer import Tokenizer, train_tokenizer

    tokenizer: Tokenizer = train_tokenizer("bpe", 300, corpus[100:200])
    tokenizer.inner.add_tokens([f"<added_{i}>" for i in range(66000)])
    tokenizer = Tokenizer(tokenizer.inner, tokenizer.roles)
    tokenizer.save(tmp_path / "big")
    manifest = prepare([text_file], tmp_path / "big", tmp_path / "d", val_fraction=0)
    assert manifest["dtype"] == "uint32"
    assert TokenDataset(tmp_path / "d", "train").document(0).dtype == np.uint32


def test_existing_output_is_reused_refused_or_overwritten(text_file, bpe_dir, tmp_path):
    out = tmp_path / "d"
    first = prepare([text_file], bpe_dir, out, val_fraction=0.2)
    assert prepare([text_file], bpe_dir, out, val_fraction=0.2) == first  # same: reused
    with pytest.raises(LmforgeError, match="different tokenizer, inputs or options.*--overwrite"):
        prepare([text_file], bpe_dir, out, val_fraction=0.5)
    second = prepare([text_file], bpe_dir, out, val_fraction=0.5, overwrite=True)
    assert second["options"]["val_fraction"] == 0.5 == read_manifest(out)["options"]["val_fraction"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_failed_run_leaves_nothing_that_looks_complete(text_file, bpe_dir, tmp_path):
    with pytest.raises(LmforgeError, match="val split is empty.*--val-fraction"):
        prepare([text_file], bpe_dir, tmp_path / "d", val_fraction=1e-9)
    assert list(tmp_path.glob("*d*")) == [] and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "does not exist"),
        ("\n \n", {}, "no documents"),
        ("one document", {}, "val split is empty"),
        ("one document", {"split": "tail", "val_fraction": 0.5}, "train split is empty"),
    ],
)
def test_input_errors(bpe_dir, tmp_path, content, kwargs, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LmforgeError, match=message) as error:
        prepare([path], bpe_dir, tmp_path / "out", **kwargs)
    assert "\n" not in str(error.value)


def test_missing_tokenizer_and_corrupt_manifest(text_file, bpe_dir, tmp_path):
    with pytest.raises(LmforgeError, match="no tokenizer at"):
        prepare([text_file], tmp_path / "nope", tmp_path / "out")
    prepare([text_file], bpe_dir, tmp_path / "d", val_fraction=0.2)
    shard = tmp_path / "d" / "train" / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(LmforgeError, match="truncated"):
        TokenDataset(tmp_path / "d", "train")
    (tmp_path / "d" / "manifest.json").write_text("{")
    with pytest.raises(LmforgeError, match="corrupt"):
        read_manifest(tmp_path / "d")
    with pytest.raises(LmforgeError, match="no manifest.json"):
        read_manifest(tmp_path)


def test_manifest_records_sources(text_file, bpe_dir, tmp_path):
    manifest = prepare([text_file, text_file], bpe_dir, tmp_path / "d", val_fraction=0)
    assert [s["num_documents"] for s in manifest["sources"]] == [60, 60]
    json.dumps(manifest)  # plain JSON all the way down
