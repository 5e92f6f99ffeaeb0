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
    beams = parser.add_argument_group("beam search")
    beams.add_argument("--num-beams", type=int, default=1, help="1 = greedy/sampling")
    beams.add_argument("--length-penalty", type=float, default=1.0)
    beams.add_argument("--no-repeat-ngram-size", type=int, default=0, help="0 = off")
    beams.add_argument("--early-stopping", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.generation.search import (
        BeamConfig,
        SamplingConfig,
        beam_search,
        generate,
        left_pad,
    )
    from lmforge.models.lm import DecoderModel, EncoderDecoderModel
    from lmforge.models.pretrained import load_pretrained

    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    if args.num_samples < 1:
        raise LmforgeError("--num-samples must be at least 1")
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    if isinstance(model, EncoderDecoderModel):
        return run_seq2seq(args, model, tokenizer, sampling)
    if not isinstance(model, DecoderModel):
        raise LmforgeError(
            f"generate needs a decoder or encoder-decoder model; {args.checkpoint} is an "
            f"{model.config.family} model (try `lmforge fill-mask`)"
        )
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        # An empty prompt starts a new document: the separator is what precedes every document.
        prompt = [tokenizer.separator_id]
    input_ids, attention_mask = left_pad([prompt] * args.num_samples, tokenizer.pad_id or 0)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    if args.num_beams > 1:
        output = beam_search(
            model,
            input_ids,
            attention_mask=attention_mask,
            beam=BeamConfig(
                num_beams=args.num_beams,
                max_new_tokens=args.max_new_tokens,
                length_penalty=args.length_penalty,
                early_stopping=args.early_stopping,
                no_repeat_ngram_size=args.no_repeat_ngram_size,
            ),
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id,
            use_cache=not args.no_cache,
        )
    else:
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


def run_seq2seq(args, model, tokenizer, sampling) -> int:  # noqa: ANN001
    """Encode the prompt as the input text and print the decoded output text."""
    from lmforge.data.framing import framing_for
    from lmforge.generation.search import (
        BeamConfig,
        beam_search_seq2seq,
        cut_at_eos,
        decoder_start_id,
        generate_seq2seq,
    )

    if not args.prompt:
        raise LmforgeError("give the input text with --prompt")
    ids = framing_for(tokenizer, model.config.family).single(tokenizer.encode(args.prompt))
    input_ids = torch.tensor([ids] * args.num_samples)
    start_id = decoder_start_id(model.config)
    start = time.perf_counter()
    if args.num_beams > 1:
        beam = BeamConfig(
            num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens,
            length_penalty=args.length_penalty,
            early_stopping=args.early_stopping,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
        )
        output = beam_search_seq2seq(
            model,
            input_ids,
            beam=beam,
            decoder_start_id=start_id,
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id,
            use_cache=not args.no_cache,
        )
    else:
        output = generate_seq2seq(
            model,
            input_ids,
            sampling=sampling,
            decoder_start_id=start_id,
            eos_id=tokenizer.eos_id,
            use_cache=not args.no_cache,
            generator=torch.Generator().manual_seed(args.seed),
        )
    seconds = time.perf_counter() - start
    new_tokens = 0
    for row in output:
        tokens = cut_at_eos(row[1:].tolist(), tokenizer.eos_id)
        new_tokens += len(tokens)
        print(tokenizer.decode(tokens, skip_special_tokens=True))
    print(
        f"{new_tokens} new tokens in {seconds:.2f} s ({new_tokens / seconds:.1f} tokens/s)",
        file=sys.stderr,
    )
    return 0
