"""Token shards on disk: the manifest contract, the shard writer and the memory-mapped reader.

Layout written by `lmforge data prepare` (format 1):

    DATA/manifest.json               written last: its presence means the directory is complete
    DATA/tokenizer.json              (+ special_tokens.json) the tokenizer the ids belong to
    DATA/{train,val}/shard-NNNNN.bin token ids (manifest "dtype": uint16 if vocab_size <= 65535,
                                     else uint32); every document is followed by separator_id
    DATA/{train,val}/shard-NNNNN.idx int64 start offset of each document within its shard

Documents never straddle shards, so a document is always one contiguous slice of one file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError

FORMAT = 1
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> str:
    """uint16 while every id fits (vocab <= 65535), else uint32: halves the disk for most vocabs."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """Load DATA/manifest.json and check that every shard it names exists with the right size."""
    data_dir = Path(data_dir)
    path = data_dir / "manifest.json"
    if not path.is_file():
        hint = " (an interrupted prepare?)" if data_dir.is_dir() else ""
        raise LmforgeError(
            f"{data_dir} is not a prepared data directory: no manifest.json{hint}; "
            "run `lmforge data prepare`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise LmforgeError(
                f"{path}: unsupported format {manifest.get('format')!r} (this lmforge reads "
                f"{FORMAT}); prepare the data again"
            )
        itemsize = np.dtype(manifest["dtype"]).itemsize
        for name, split in manifest["splits"].items():
            _check_split(data_dir, name, split, itemsize)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise LmforgeError(f"{path} is corrupt ({type(error).__name__}: {error})") from None
    return manifest


def _check_split(data_dir: Path, name: str, split: dict[str, Any], itemsize: int) -> None:
    if sum(s["num_tokens"] for s in split["shards"]) != split["num_tokens"]:
        raise LmforgeError(f"{data_dir}/manifest.json is corrupt: {name} token counts disagree")
    for shard in split["shards"]:
        expected = {"bin": shard["num_tokens"] * itemsize, "idx": shard["num_documents"] * 8}
        for kind, size in expected.items():
            file = data_dir / shard[kind]
            if not file.is_file():
                raise LmforgeError(f"{file} is missing; prepare the data again")
            if file.stat().st_size != size:
                raise LmforgeError(
                    f"{file} has {file.stat().st_size} bytes, the manifest says {size} "
                    "(truncated or overwritten); prepare the data again"
                )


def _memmap(path: Path, dtype: str, count: int) -> np.ndarray:
    # np.memmap refuses empty files; an empty array behaves the same for every reader here.
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class TokenDataset:
    """All shards of one split, memory-mapped read-only, seen as one stream of tokens."""

    def __init__(self, data_dir: str | Path, split: str) -> None:
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(self.data_dir)
        splits = self.manifest["splits"]
        if split not in splits:
            raise LmforgeError(f"{data_dir} has no split {split!r}; available: {sorted(splits)}")
        info = splits[split]
        self.split = split
        self.dtype = self.manifest["dtype"]
        self.separator_id: int = self.manifest["separator_id"]
        self.vocab_size: int = self.manifest["vocab_size"]
        self.num_tokens: int = info["num_tokens"]
        self.num_documents: int = info["num_documents"]
        self.num_bytes: int = info["num_bytes"]
        shards = info["shards"]
        self._bins = [
            _memmap(self.data_dir / s["bin"], self.dtype, s["num_tokens"]) for s in shards
        ]
        self._idxs = [
            _memmap(self.data_dir / s["idx"], "int64", s["num_documents"]) for s in shards
        ]
        # Cumulative starts: shard k holds tokens [token_starts[k], token_starts[k + 1]).
        self._token_starts = np.cumsum([0] + [s["num_tokens"] for s in shards])
        self._doc_starts = np.cumsum([0] + [s["num_documents"] for s in shards])

    @property
    def tokens_per_byte(self) -> float:
        """Tokens per UTF-8 byte of text (separators excluded): converts loss/token to bits/byte."""
        if self.num_bytes == 0:
            return 0.0
        return (self.num_tokens - self.num_documents) / self.num_bytes

    def __len__(self) -> int:
        return self.num_documents

    def document(self, index: int) -> np.ndarray:
        """The tokens of document `index`, without its separator."""
        if not 0 <= index < self.num_documents:
            raise IndexError(f"document {index} out of range [0, {self.num_documents})")
        shard = int(np.searchsorted(self._doc_starts, index, side="right")) - 1
        local = index - int(self._doc_starts[shard])
        idx, tokens = self._idxs[shard], self._bins[shard]
        start = int(idx[local])
        stop = int(idx[local + 1]) if local + 1 < len(idx) else len(tokens)
        return np.asarray(tokens[start : stop - 1])

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split's stream (documents and separators, in order)."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"tokens [{start}, {stop}) out of range [0, {self.num_tokens})")
        first = int(np.searchsorted(self._token_starts, start, side="right")) - 1
        pieces = []
        shard = first
        while start < stop:
            offset = int(self._token_starts[shard])
            end = min(stop, int(self._token_starts[shard + 1]))
            pieces.append(self._bins[shard][start - offset : end - offset])
            start = end
            shard += 1
        if len(pieces) == 1:
            return np.asarray(pieces[0])
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=self.dtype)


class ShardWriter:
    """Appends documents to ROOT/SPLIT/shard-NNNNN.{bin,idx}, starting a new shard before one
    would exceed `shard_tokens` (a longer document gets a shard of its own)."""

    def __init__(self, root: Path, split: str, dtype: str, shard_tokens: int) -> None:
        self.root, self.split, self.dtype, self.shard_tokens = root, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.num_tokens = self.num_documents = self.num_bytes = 0
        self._bin = self._idx = None

    def add(self, tokens: np.ndarray, lengths: np.ndarray, num_bytes: int) -> None:
        self.num_bytes += num_bytes
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        i = 0
        while i < len(lengths):
            used = self.shards[-1]["num_tokens"] if self._bin is not None else 0
            room = self.shard_tokens - used
            fit = int(np.searchsorted(offsets[i + 1 :] - offsets[i], room, side="right"))
            if fit == 0 and self._bin is not None:
                self._close_shard()
                continue
            fit = max(fit, 1)
            self._write(tokens[offsets[i] : offsets[i + fit]], offsets[i : i + fit] - offsets[i])
            i += fit

    def _write(self, tokens: np.ndarray, starts: np.ndarray) -> None:
        if self._bin is None:
            self._open_shard()
        shard = self.shards[-1]
        self._idx.write((starts + shard["num_tokens"]).astype(np.int64).tobytes())
        self._bin.write(tokens.tobytes())
        shard["num_tokens"] += len(tokens)
        shard["num_documents"] += len(starts)
        self.num_tokens += len(tokens)
        self.num_documents += len(starts)

    def _open_shard(self) -> None:
        name = f"{self.split}/shard-{len(self.shards):05d}"
        (self.root / self.split).mkdir(exist_ok=True)
        self._bin = open(self.root / f"{name}.bin", "wb")  # noqa: SIM115 (closed in _close_shard)
        self._idx = open(self.root / f"{name}.idx", "wb")  # noqa: SIM115
        self.shards.append(
            {"bin": f"{name}.bin", "idx": f"{name}.idx", "num_tokens": 0, "num_documents": 0}
        )

    def _close_shard(self) -> None:
        self._bin.close()
        self._idx.close()
        self._bin = self._idx = None

    def close(self) -> dict[str, Any]:
        if self._bin is not None:
            self._close_shard()
        return {
            "num_tokens": self.num_tokens,
            "num_documents": self.num_documents,
            "num_bytes": self.num_bytes,
            "shards": self.shards,
        }
