"""`lmforge generate RUN_OR_CHECKPOINT --prompt TEXT`: continue a prompt with a trained decoder."""

from __future__ import annotations

import argparse
import sys
import time

import torch

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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.cli.pretrained import load_pretrained
    from lmforge.generation.search import SamplingConfig, generate, left_pad
    from lmforge.models.lm import DecoderModel

    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    if args.num_samples < 1:
        raise LmforgeError("--num-samples must be at least 1")
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    if not isinstance(model, DecoderModel):
        raise LmforgeError(
            f"generate needs a decoder-only model; {args.checkpoint} is a "
            f"{model.config.family} model"
        )
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        # An empty prompt starts a new document: the separator is what precedes every document.
        prompt = [tokenizer.separator_id]
    input_ids, attention_mask = left_pad([prompt] * args.num_samples, tokenizer.pad_id or 0)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    output = generate(
        model,
        input_ids,
        attention_mask=attention_mask,
        sampling=sampling,
        eos_id=tokenizer.eos_id,
        use_cache=not args.no_cache,
        generator=generator,
    )
    seconds = time.perf_counter() - start
    new_tokens = 0
    for row in output:
        continuation = row[input_ids.shape[1] :].tolist()
        if tokenizer.eos_id in continuation:
            continuation = continuation[: continuation.index(tokenizer.eos_id)]
        new_tokens += len(continuation)
        print(args.prompt + tokenizer.decode(continuation, skip_special_tokens=True))
        if args.num_samples > 1:
            print("-" * 40)
    print(
        f"{new_tokens} new tokens in {seconds:.2f} s ({new_tokens / seconds:.1f} tokens/s)",
        file=sys.stderr,
    )
    return 0
