"""`lmforge fill-mask RUN_OR_CHECKPOINT TEXT`: the most likely tokens at each mask, with
probabilities, as the Hugging Face fill-mask pipeline reports them (score, token, sequence)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fill-mask",
        help="predict masked tokens with a trained encoder",
        description=(
            'Predict the tokens hidden by [MASK] or <mask>, e.g. "The capital of France is '
            '[MASK]." Prints the top-k tokens of each mask with their probabilities.'
        ),
    )
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("text", metavar="TEXT", help="text with one or more [MASK] / <mask>")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.models.pretrained import load_pretrained
    from lmforge.tasks.fill_mask import check_fill_mask_input, fill_mask

    check_fill_mask_input(args.text, top_k=args.top_k)
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    results = fill_mask(model, tokenizer, args.text, top_k=args.top_k, name=args.checkpoint)
    for index, predictions in enumerate(results):
        if len(results) > 1:
            print(f"mask {index + 1}:")
        print(f"{'score':>8}  {'token':<16} sequence")
        for prediction in predictions:
            print(f"{prediction.score:8.4f}  {prediction.token:<16} {prediction.sequence}")
    return 0
