"""`lmforge generate RUN_OR_CHECKPOINT --prompt TEXT`: continue a prompt with a trained decoder."""

from __future__ import annotations

import argparse
import sys

from lmforge.errors import LmforgeError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate text from a trained model",
        description="Continue a prompt with a trained decoder-only model (KV-cached decoding).",
    )
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument(
        "--prompt", default="", help="text to continue (default: start of document)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="recompute every step (slow)")
    beams = parser.add_argument_group("beam search")
    beams.add_argument("--num-beams", type=int, default=1, help="1 = greedy/sampling")
    beams.add_argument("--length-penalty", type=float, default=1.0)
    beams.add_argument("--no-repeat-ngram-size", type=int, default=0, help="0 = off")
    beams.add_argument("--early-stopping", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.generation.text import decoding_configs, generate_text
    from lmforge.models.pretrained import load_pretrained

    if args.num_samples < 1:
        raise LmforgeError("--num-samples must be at least 1")
    sampling, beam = decoding_configs(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        early_stopping=args.early_stopping,
    )
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    result = generate_text(
        model,
        tokenizer,
        [args.prompt] * args.num_samples,
        sampling=sampling,
        beam=beam,
        seed=args.seed,
        use_cache=not args.no_cache,
        name=args.checkpoint,
    )
    # Samples of a decoder continue one prompt: a rule between them shows where each ends.
    rule = args.num_samples > 1 and model.config.family == "decoder"
    for text in result.texts:
        print(text)
        if rule:
            print("-" * 40)
    seconds, new_tokens = result.seconds, result.num_new_tokens
    print(
        f"{new_tokens} new tokens in {seconds:.2f} s ({new_tokens / seconds:.1f} tokens/s)",
        file=sys.stderr,
    )
    return 0
