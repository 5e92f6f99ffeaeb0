"""`lmforge data prepare`: tokenize a corpus into memory-mapped token shards (see shards.py).

Streaming and parallel: documents are read one at a time in this process (decoding statistics
stay in one place), grouped into batches of about 1 MB and tokenized in worker processes that
each load the tokenizer once. At most a few batches per worker are in flight and results are
consumed in submission order, so memory is flat in corpus size and the output is byte-identical
for any number of workers.

Splits are decided per document:
- `hash`: blake2b of the document text, as a fraction of 2**64, below `val_fraction` -> val. The
  index is deliberately left out: identical documents (boilerplate, repeated headers) land in
  the same split, so val never contains a verbatim copy of a train document.
- `tail`: the documents starting in the last val_fraction of the text by bytes, in input order
  (nanoGPT's 90/10 convention).
  This needs the total first, so the inputs are read twice (a cheap pass without tokenizing),
  rather than buffering an unknown-sized tail.

Atomicity: everything is written into a hidden sibling directory `.OUT.tmp-XXXX`, manifest.json
last, then renamed into place; an interrupted run never leaves something that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lmforge.data.shards import FORMAT, ShardWriter, read_manifest, token_dtype
from lmforge.data.sources import (
    Document,
    check_spec,
    describe_replaced,
    describe_skipped,
    iter_documents,
)
from lmforge.data.tokenizer import Tokenizer, load_tokenizer
from lmforge.errors import LmforgeError

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]
SPLIT_MODES = ("hash", "tail")
DEFAULT_SHARD_TOKENS = 100_000_000
_BATCH_CHARS = 1 << 20
_BATCH_DOCS = 4096
SPLITS = ("train", "val")


@dataclass
class _Stats:
    """What the read side saw: per-input document counts and decoding damage."""

    documents_per_input: list[int] = field(default_factory=list)
    replaced_per_file: Counter = field(default_factory=Counter)
    binary_files: list[str] = field(default_factory=list)
    """Files skipped as not text (`sources.looks_binary`)."""


def prepare_data(
    inputs: list[str],
    tokenizer_path: str | Path,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    val_fraction: float = 0.01,
    split: str = "hash",
    split_by: str = "paragraph",
    text_field: str = "text",
    encoding: str = "utf-8",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Tokenize `inputs` into DATA shards at `out_dir`; returns the manifest written there."""
    if split not in SPLIT_MODES:
        raise LmforgeError(f"unknown --split {split!r}; choose one of {', '.join(SPLIT_MODES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise LmforgeError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not inputs:
        raise LmforgeError("no --input given")
    for spec in inputs:
        check_spec(spec)
    tokenizer = load_tokenizer(tokenizer_path)
    out_dir = Path(out_dir)
    options = {
        "split": split,
        "val_fraction": val_fraction,
        "split_by": split_by,
        "text_field": text_field,
        "encoding": encoding,
        "shard_tokens": shard_tokens,
    }
    identity = {"tokenizer_sha256": tokenizer.sha256, "inputs": list(inputs), "options": options}
    existing = _check_output(out_dir, identity, overwrite)
    if existing is not None:
        return existing
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        manifest = _prepare_into(tmp, tokenizer, tokenizer_path, identity, workers, progress)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_output(out_dir: Path, identity: dict, overwrite: bool) -> Manifest | None:
    """The existing manifest when OUT already holds this exact preparation; raise on conflicts."""
    if overwrite or not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise LmforgeError(f"--out {out_dir} is a file; choose a directory path")
    if not any(out_dir.iterdir()):
        return None
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        raise LmforgeError(
            f"--out {out_dir} exists and is not a prepared data directory; "
            "choose another path or pass --overwrite to replace it"
        )
    try:
        manifest = read_manifest(out_dir)
    except LmforgeError:
        manifest = {}
    if all(manifest.get(key) == value for key, value in identity.items()):
        logger.info("%s already holds this preparation; pass --overwrite to redo it", out_dir)
        return manifest
    raise LmforgeError(
        f"--out {out_dir} holds data prepared from a different tokenizer, inputs or options; "
        "choose another path or pass --overwrite to replace it"
    )


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():  # --overwrite, or an empty directory
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _prepare_into(
    tmp: Path,
    tokenizer: Tokenizer,
    tokenizer_path: str | Path,
    identity: dict,
    workers: int | None,
    progress: bool,
) -> Manifest:
    inputs, options = identity["inputs"], identity["options"]
    dtype = token_dtype(tokenizer.vocab_size)
    separator_id = tokenizer.separator_id
    stats = _Stats()
    first_val_index = total_bytes = None
    if options["split"] == "tail" and options["val_fraction"] > 0:
        first_val_index, total_bytes = _tail_start(inputs, options)
    writers = {name: ShardWriter(tmp, name, dtype, options["shard_tokens"]) for name in SPLITS}
    started = time.perf_counter()
    batches = _batches(_documents(inputs, options, stats), options)
    first_index = 0
    encoded_batches = _encode_in_order(batches, tokenizer_path, dtype, separator_id, workers)
    with tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=not progress
    ) as bar:
        for texts, encoded in encoded_batches:
            is_val = _val_mask(texts, first_index, options, first_val_index)
            first_index += len(texts)
            _route(encoded, is_val, writers)
            bar.update(int(encoded[2].sum()))
            bar.set_postfix_str(f"{sum(w.num_tokens for w in writers.values()):,} tokens")
    elapsed = time.perf_counter() - started
    splits = {name: writer.close() for name, writer in writers.items()}
    _check_splits(splits, options, first_index)
    tokenizer.save(tmp)
    manifest = {
        "format": FORMAT,
        **identity,
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype,
        "separator_id": separator_id,
        "splits": splits,
        "sources": [
            {"input": spec, "num_documents": count}
            for spec, count in zip(inputs, stats.documents_per_input, strict=True)
        ],
        "encoding": options["encoding"],
        "replaced_bytes": sum(stats.replaced_per_file.values()),
        "files_with_replacements": dict(sorted(stats.replaced_per_file.items())),
        "binary_files_skipped": stats.binary_files,
    }
    _write_json(tmp / "manifest.json", manifest)  # last: its presence marks completion
    _log_summary(manifest, elapsed)
    return manifest


def _tail_start(inputs: list[str], options: dict) -> tuple[int, int]:
    """First pass of the tail split, without tokenizing: the index of the first val document and
    the total UTF-8 bytes.

    The cut is by bytes, as nanoGPT cuts tinyshakespeare (first 90% of the text for train): val
    starts at the first document that begins at or after (1 - val_fraction) of the text.
    """
    sizes = np.fromiter(
        (len(d.text.encode("utf-8")) for d in _documents(inputs, options, _Stats())), dtype=np.int64
    )
    starts = np.cumsum(sizes) - sizes
    cut = (1 - options["val_fraction"]) * sizes.sum()
    first_val = int(np.searchsorted(starts, cut, side="left"))
    return min(first_val, max(len(sizes) - 1, 0)), int(sizes.sum())


def _documents(inputs: list[str], options: dict, stats: _Stats) -> Iterator[Document]:
    stats.documents_per_input = [0] * len(inputs)
    for position, spec in enumerate(inputs):
        for document in iter_documents(
            spec,
            split_by=options["split_by"],
            text_field=options["text_field"],
            encoding=options["encoding"],
            binary_files=stats.binary_files,
        ):
            stats.documents_per_input[position] += 1
            if document.replaced_bytes:
                stats.replaced_per_file[document.source] += document.replaced_bytes
            yield document


def _batches(documents: Iterator[Document], options: dict) -> Iterator[list[str]]:
    """Lists of document texts of about 1 MB: big enough to amortize inter-process overhead."""
    batch: list[str] = []
    chars = 0
    for document in documents:
        batch.append(document.text)
        chars += len(document.text)
        if chars >= _BATCH_CHARS or len(batch) >= _BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _val_mask(
    texts: list[str], first_index: int, options: dict, first_val_index: int | None
) -> np.ndarray:
    """Which documents of a batch go to val; `first_index` is the batch's first document index."""
    if options["val_fraction"] == 0:
        return np.zeros(len(texts), dtype=bool)
    if first_val_index is not None:  # tail split
        return np.arange(first_index, first_index + len(texts)) >= first_val_index
    threshold = int(options["val_fraction"] * 2**64)
    return np.array([_hash64(text) < threshold for text in texts], dtype=bool)


def _hash64(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _encode_in_order(
    batches: Iterator[list[str]],
    tokenizer_path: str | Path,
    dtype: str,
    separator_id: int,
    workers: int | None,
) -> Iterator[tuple[list[str], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(texts, encoded batch) in input order; see `_encode_batch` for the encoding."""
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        _init_worker(str(tokenizer_path), dtype, separator_id, keep_threads=True)
        for texts in batches:
            yield texts, _encode_batch(texts)
        return
    # Not Pool.imap: its feeder thread would drain `batches` (the whole corpus) into memory when
    # reading outpaces tokenizing. A bounded window of async tasks keeps memory flat and order.
    # spawn, not fork: the parent may hold tokenizers' thread pool and tqdm's monitor thread.
    context = multiprocessing.get_context("spawn")
    init_args = (str(tokenizer_path), dtype, separator_id, False)
    with context.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        pending: deque = deque()
        for texts in batches:
            pending.append((texts, pool.apply_async(_encode_batch, (texts,))))
            if len(pending) >= 2 * workers:
                texts_done, result = pending.popleft()
                yield texts_done, result.get()
        while pending:
            texts_done, result = pending.popleft()
            yield texts_done, result.get()


_worker: dict[str, Any] = {}


def _init_worker(tokenizer_path: str, dtype: str, separator_id: int, keep_threads: bool) -> None:
    if not keep_threads:
        # One process per core is the parallelism; tokenizers' own threads would oversubscribe.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker.update(tokenizer=load_tokenizer(tokenizer_path), dtype=dtype, separator=separator_id)


def _encode_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode a batch: (tokens with a separator after each document, lengths incl. the
    separator, UTF-8 bytes per document), in the on-disk dtype to halve the transfer."""
    separator = _worker["separator"]
    ids = _worker["tokenizer"].encode_batch(texts)
    lengths = np.fromiter((len(row) + 1 for row in ids), dtype=np.int64, count=len(ids))
    tokens = np.empty(int(lengths.sum()), dtype=_worker["dtype"])
    ends = np.cumsum(lengths)
    tokens[ends - 1] = separator
    position = 0
    for row, length in zip(ids, lengths, strict=True):
        tokens[position : position + length - 1] = row
        position += length
    num_bytes = np.fromiter((len(t.encode("utf-8")) for t in texts), np.int64, len(texts))
    return tokens, lengths, num_bytes


def _route(encoded: tuple[np.ndarray, ...], is_val: np.ndarray, writers: dict) -> None:
    tokens, lengths, num_bytes = encoded
    token_is_val = np.repeat(is_val, lengths)
    for name, docs, toks in (("train", ~is_val, ~token_is_val), ("val", is_val, token_is_val)):
        if docs.any():
            writers[name].add(tokens[toks], lengths[docs], int(num_bytes[docs].sum()))


def _check_splits(splits: dict[str, dict], options: dict, num_documents: int) -> None:
    if splits["train"]["num_documents"] == 0:
        raise LmforgeError(
            f"the train split is empty ({num_documents} documents, --val-fraction "
            f"{options['val_fraction']}); add input, or split finer with --split-by line"
        )
    if options["val_fraction"] > 0 and splits["val"]["num_documents"] == 0:
        raise LmforgeError(
            f"the val split is empty: none of {num_documents} documents fell in --val-fraction "
            f"{options['val_fraction']}; raise it, use --split tail, split finer with "
            "--split-by paragraph|line, or pass --val-fraction 0"
        )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _log_summary(manifest: Manifest, elapsed: float) -> None:
    splits = manifest["splits"].values()
    documents = sum(s["num_documents"] for s in splits)
    tokens = sum(s["num_tokens"] for s in splits)
    megabytes = sum(s["num_bytes"] for s in splits) / 1e6
    logger.info(
        "prepared %s documents, %s tokens from %.1f MB of text in %.1f s (%.2f MB/s), "
        "%d replaced bytes",
        f"{documents:,}",
        f"{tokens:,}",
        megabytes,
        elapsed,
        megabytes / max(elapsed, 1e-9),
        manifest["replaced_bytes"],
    )
    if manifest["binary_files_skipped"]:
        logger.warning("%s", describe_skipped(manifest["binary_files_skipped"]))
    if manifest["files_with_replacements"]:
        replaced = manifest["files_with_replacements"]
        logger.warning("%s", describe_replaced(replaced, manifest["encoding"]))
