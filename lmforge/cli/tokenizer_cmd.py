"""`lmforge tokenizer train`: train a byte-level BPE, WordPiece or Unigram tokenizer."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter

from lmforge.data.sources import (
    SPLIT_BY,
    Document,
    describe_replaced,
    describe_skipped,
    iter_documents,
)
from lmforge.data.tokenizer import KINDS, train_tokenizer

_INPUT_HELP = (
    "files, directories, globs, hf:NAME[:CONFIG] (hf:json:FILES for local files through "
    "`datasets`) or builtin:python-docs"
)
ENCODING_HELP = (
    "codec for text files (default utf-8); undecodable bytes become U+FFFD and are counted "
    "and reported; pass e.g. latin-1 for Latin-1 files. Files that are not text (images, "
    "archives: NUL bytes or control characters) are skipped and named"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train tokenizers")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train",
        help="train a tokenizer on text",
        description="Train a tokenizer: bpe (byte-level, GPT-2/RoBERTa/BART), wordpiece (BERT) "
        "or unigram (T5, with 100 <extra_id_N> sentinels at the end of the vocab).",
    )
    train.add_argument("--kind", required=True, choices=KINDS)
    train.add_argument("--vocab-size", type=int, required=True, help="including special tokens")
    train.add_argument("--input", nargs="+", required=True, metavar="SPEC", help=_INPUT_HELP)
    train.add_argument("--out", required=True, metavar="DIR", help="writes DIR/tokenizer.json")
    train.add_argument("--split-by", default="paragraph", choices=SPLIT_BY)
    train.add_argument("--text-field", default="text", help="field of .jsonl/.parquet/hf inputs")
    train.add_argument("--encoding", default="utf-8", help=ENCODING_HELP)
    train.add_argument(
        "--cased",
        action="store_true",
        help="wordpiece only: keep case (as bert-base-cased; default: lower-case, as -uncased)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    binary_files: list[str] = []
    replaced: Counter[str] = Counter()
    documents = itertools.chain.from_iterable(
        iter_documents(
            spec,
            split_by=args.split_by,
            text_field=args.text_field,
            encoding=args.encoding,
            binary_files=binary_files,
        )  # fmt: skip
        for spec in args.input
    )
    tokenizer = train_tokenizer(
        args.kind,
        args.vocab_size,
        (_counting(document, replaced) for document in documents),
        show_progress=not args.no_progress,
        cased=args.cased,
    )
    out = tokenizer.save(args.out)
    vocab_size = tokenizer.vocab_size
    print(f"trained a {args.kind} tokenizer with {vocab_size:,} tokens -> {out}/tokenizer.json")
    if binary_files:
        print(describe_skipped(binary_files), file=sys.stderr)
    if replaced:
        print(describe_replaced(replaced, args.encoding), file=sys.stderr)
    return 0


def _counting(document: Document, replaced: Counter[str]) -> str:
    """The document's text, its replaced bytes added to `replaced` (per file)."""
    if document.replaced_bytes:
        replaced[document.source] += document.replaced_bytes
    return document.text
