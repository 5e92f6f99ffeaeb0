"""`lmforge data prepare`: tokenize text into token shards for training."""

from __future__ import annotations

import argparse

from lmforge.cli.tokenizer_cmd import ENCODING_HELP
from lmforge.data.prepare import SPLIT_MODES, prepare_data
from lmforge.data.sources import SPLIT_BY


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="prepare training data")
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    prepare = commands.add_parser(
        "prepare",
        help="tokenize text into train/val token shards",
        description="Tokenize inputs in parallel into DATA/{train,val}/shard-*.bin (+ .idx) and "
        "DATA/manifest.json. Streaming: memory does not grow with the corpus. The output "
        "appears atomically when complete.",
    )
    prepare.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="files, directories, globs, hf:NAME[:CONFIG] (hf:json:FILES for local files) "
        "or builtin:python-docs",
    )
    prepare.add_argument("--tokenizer", required=True, metavar="DIR_OR_JSON")
    prepare.add_argument("--out", required=True, metavar="DATA_DIR")
    prepare.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    prepare.add_argument(
        "--val-fraction", type=float, default=0.01, help="fraction of documents for val (0.01)"
    )
    prepare.add_argument(
        "--split",
        default="hash",
        choices=SPLIT_MODES,
        help=(
            "hash: by a hash of each document's text; "
            "tail: the documents in the last val-fraction of the text (nanoGPT style)"
        ),
    )
    prepare.add_argument("--split-by", default="paragraph", choices=SPLIT_BY)
    prepare.add_argument("--text-field", default="text", help="field of .jsonl/.parquet/hf inputs")
    prepare.add_argument("--encoding", default="utf-8", help=ENCODING_HELP)
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing DATA_DIR")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    prepare.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = prepare_data(
        args.input,
        args.tokenizer,
        args.out,
        workers=args.workers,
        val_fraction=args.val_fraction,
        split=args.split,
        split_by=args.split_by,
        text_field=args.text_field,
        encoding=args.encoding,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    splits = ", ".join(
        f"{name}: {split['num_tokens']:,} tokens in {split['num_documents']:,} documents"
        for name, split in manifest["splits"].items()
    )
    print(f"wrote {args.out} ({splits})")
    return 0
