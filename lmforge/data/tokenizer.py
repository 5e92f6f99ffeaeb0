"""Tokenizers: training the three reference kinds and a small wrapper that knows token roles.

Built on Hugging Face `tokenizers`. The three kinds follow the models that made them standard:

- `bpe`: byte-level BPE as in GPT-2 / RoBERTa / BART (Radford et al. 2019): every byte is in the
  alphabet, so any text round-trips exactly. Special tokens `<s> <pad> </s> <unk> <mask>` take ids
  0..4, the RoBERTa/BART order.
- `wordpiece`: BERT (Devlin et al. 2019): BertNormalizer (lower-casing, or with `cased` keeping
  case and accents as bert-base-cased), BertPreTokenizer,
  `[PAD] [UNK] [CLS] [SEP] [MASK]` at ids 0..4, `##` continuation prefix.
- `unigram`: T5 (Raffel et al. 2020): SentencePiece-style Unigram with Metaspace (`▁`),
  `<pad> </s> <unk>` at ids 0..2 and 100 sentinels at the END of the vocabulary; as in T5,
  `<extra_id_0>` is the last id and `<extra_id_99>` the first sentinel id.

`Tokenizer` wraps `tokenizers.Tokenizer` and exposes role ids (`bos_id`, `eos_id`, ...). Roles are
saved in `special_tokens.json` beside `tokenizer.json`; for a foreign tokenizer.json (one saved from
`transformers`, say) they are inferred from well-known token names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from lmforge.errors import LmforgeError

TokenizerKind = Literal["bpe", "wordpiece", "unigram"]
KINDS: tuple[str, ...] = ("bpe", "wordpiece", "unigram")
ROLES: tuple[str, ...] = ("bos", "eos", "pad", "unk", "mask", "cls", "sep")
NUM_SENTINELS = 100

_BPE_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
_WORDPIECE_SPECIALS = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
}
_UNIGRAM_SPECIALS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}

# Well-known names -> roles, for tokenizer.json files without our special_tokens.json.
# GPT-2 has only <|endoftext|>, used both to start and to end documents.
_KNOWN_NAMES: dict[str, tuple[str, ...]] = {
    "<|endoftext|>": ("bos", "eos"),
    "<s>": ("bos",),
    "</s>": ("eos",),
    "<pad>": ("pad",),
    "[PAD]": ("pad",),
    "<unk>": ("unk",),
    "[UNK]": ("unk",),
    "<mask>": ("mask",),
    "[MASK]": ("mask",),
    "[CLS]": ("cls",),
    "[SEP]": ("sep",),
}
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the ids of its special-token roles (None where absent)."""

    def __init__(
        self, inner: HFTokenizer, roles: dict[str, str] | None = None, json_text: str | None = None
    ) -> None:
        self.inner = inner
        # Some tokenizer.json files (sentence-transformers exports) pad or truncate every encoding
        # to a fixed length; lmforge pads and truncates itself, per batch and per task.
        inner.no_padding()
        inner.no_truncation()
        # Keep the exact JSON text: re-serializing a loaded tokenizer can change float formatting,
        # and sha256 must identify the file on disk.
        self._json_text = json_text if json_text is not None else inner.to_str()
        self.roles = dict(roles) if roles is not None else _infer_roles(inner)
        vocab = inner.get_vocab(with_added_tokens=True)
        for role, token in self.roles.items():
            if token not in vocab:
                raise LmforgeError(f"special token {token!r} for role {role!r} is not in the vocab")
        ids = {role: vocab[token] for role, token in self.roles.items()}
        self.bos_id: int | None = ids.get("bos")
        self.eos_id: int | None = ids.get("eos")
        self.pad_id: int | None = ids.get("pad")
        self.unk_id: int | None = ids.get("unk")
        self.mask_id: int | None = ids.get("mask")
        self.cls_id: int | None = ids.get("cls")
        self.sep_id: int | None = ids.get("sep")
        sentinels = sorted(
            (int(m.group(1)), token_id)
            for token, token_id in vocab.items()
            if (m := _SENTINEL.fullmatch(token))
        )
        self.sentinel_ids: list[int] = [token_id for _, token_id in sentinels]

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size(with_added_tokens=True)

    @property
    def separator_id(self) -> int:
        """The token written after every document in packed data: eos, else sep (WordPiece)."""
        if self.eos_id is not None:
            return self.eos_id
        if self.sep_id is not None:
            return self.sep_id
        raise LmforgeError(
            "tokenizer has neither an end-of-sequence nor a separator token; "
            "add one (e.g. </s>) and name it in special_tokens.json"
        )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        return self._json_text

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without any special tokens added."""
        return self.inner.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.inner.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        # Default keeps special tokens so that decode is the exact inverse of encode.
        return self.inner.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, directory: str | Path) -> Path:
        """Write DIR/tokenizer.json and DIR/special_tokens.json (role -> token); returns DIR."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.json").write_bytes(self.to_json().encode("utf-8"))
        roles = json.dumps(self.roles, indent=2, sort_keys=True) + "\n"
        (directory / "special_tokens.json").write_text(roles, encoding="utf-8")
        return directory


def _infer_roles(inner: HFTokenizer) -> dict[str, str]:
    """Roles from well-known special-token names, first match per role in id order."""
    vocab = inner.get_vocab(with_added_tokens=True)
    roles: dict[str, str] = {}
    for token in sorted(_KNOWN_NAMES, key=lambda t: vocab.get(t, 1 << 62)):
        if token in vocab:
            for role in _KNOWN_NAMES[token]:
                roles.setdefault(role, token)
    return roles


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a directory holding tokenizer.json (and optionally special_tokens.json) or the file."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise LmforgeError(
            f"no tokenizer at {path}: expected a tokenizer.json file or a directory holding one "
            "(train one with `lmforge tokenizer train`)"
        )
    try:
        json_text = file.read_bytes().decode("utf-8")  # no newline translation: sha256 is of bytes
        inner = HFTokenizer.from_str(json_text)
    except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LmforgeError(f"{file} is not a valid tokenizer.json: {first_line}") from None
    roles = None
    roles_file = file.parent / "special_tokens.json"
    if roles_file.is_file():
        try:
            roles = json.loads(roles_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise LmforgeError(f"{roles_file} is not valid JSON: {error}") from None
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise LmforgeError(f"{roles_file}: unknown roles {sorted(unknown)}; valid: {ROLES}")
    return Tokenizer(inner, roles, json_text)


def train_tokenizer(
    kind: str,
    vocab_size: int,
    documents: Iterable[str],
    *,
    show_progress: bool = False,
    cased: bool = False,
) -> Tokenizer:
    """Train a `bpe`, `wordpiece` or `unigram` tokenizer of `vocab_size` ids, specials included.

    `cased` keeps the case of a WordPiece vocabulary (bert-base-cased; the default lower-cases,
    as bert-base-uncased); byte-level BPE and Unigram always keep it."""
    if kind not in KINDS:
        raise LmforgeError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    if cased and kind != "wordpiece":
        raise LmforgeError(f"--cased is for wordpiece tokenizers; {kind} ones always keep case")
    if kind == "wordpiece":
        built = _wordpiece(vocab_size, show_progress, lowercase=not cased)
    else:
        built = {"bpe": _bpe, "unigram": _unigram}[kind](vocab_size, show_progress)
    inner, trainer, roles, extra_specials = built
    inner.train_from_iterator(_text_batches(documents), trainer=trainer)
    if extra_specials:
        inner.add_special_tokens(extra_specials)
    return Tokenizer(inner, roles)


def _text_batches(documents: Iterable[str], size: int = 1000) -> Iterable[list[str]]:
    # Batches cut the Python->Rust call overhead; the trainer never needs the whole corpus at once.
    batch: list[str] = []
    for document in documents:
        batch.append(document)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_vocab_size(vocab_size: int, minimum: int) -> None:
    if vocab_size < minimum:
        raise LmforgeError(f"--vocab-size {vocab_size} is too small; use at least {minimum}")


def _bpe(vocab_size: int, show_progress: bool):
    _check_vocab_size(vocab_size, 256 + len(_BPE_SPECIALS))
    inner = HFTokenizer(models.BPE())
    # add_prefix_space=False: the GPT-2 / RoBERTa default; documents are encoded as given.
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_BPE_SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    return inner, trainer, _BPE_SPECIALS, []


def _wordpiece(vocab_size: int, show_progress: bool, *, lowercase: bool):
    _check_vocab_size(vocab_size, 2 * len(_WORDPIECE_SPECIALS))
    inner = HFTokenizer(models.WordPiece(unk_token=_WORDPIECE_SPECIALS["unk"]))
    # bert-base-cased keeps accents too: BertNormalizer strips them only when lower-casing.
    inner.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    inner.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    inner.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_WORDPIECE_SPECIALS.values()),
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    return inner, trainer, _WORDPIECE_SPECIALS, []


def _unigram(vocab_size: int, show_progress: bool):
    _check_vocab_size(vocab_size, NUM_SENTINELS + 2 * len(_UNIGRAM_SPECIALS))
    inner = HFTokenizer(models.Unigram())
    inner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    inner.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - NUM_SENTINELS,
        special_tokens=list(_UNIGRAM_SPECIALS.values()),
        unk_token=_UNIGRAM_SPECIALS["unk"],
        show_progress=show_progress,
    )
    # Appended after training so they sit at the end of the vocab, highest id = <extra_id_0> (T5).
    sentinels = [f"<extra_id_{n}>" for n in reversed(range(NUM_SENTINELS))]
    return inner, trainer, _UNIGRAM_SPECIALS, sentinels
