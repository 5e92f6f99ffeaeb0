"""Beam-search generation speed of encoder-decoder models beside transformers' `generate`.

The same random weights on both sides (ours exported through `lmforge.interop.hf`), the same
inputs and settings; our beam search reproduces transformers' token for token (tests/generation),
so both produce the same hypotheses and the same number of new tokens. Reports new tokens per
second (batch x generated length / wall time), median of --repeats.

    python bench/generate_throughput.py [--models t5-tiny bart-tiny t5-30m] [--num-beams 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmforge.config.presets import get_preset
from lmforge.generation.search import BeamConfig, beam_search_seq2seq
from lmforge.interop.hf import build_hf_model
from lmforge.kernels.allocator import keep_freed_memory
from lmforge.models.lm import build_model


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:  # noqa: ANN001
    fn()  # warm-up
    times, output = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        output = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def bench_model(name: str, args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    cfg = get_preset(name)
    model = build_model(cfg).eval()
    hf_model = build_hf_model(cfg, model.state_dict()).eval()
    ids = torch.randint(5, cfg.vocab_size, (args.batch_size, args.input_len))
    eos = 1
    beam = BeamConfig(num_beams=args.num_beams, max_new_tokens=args.new_tokens)

    def ours() -> torch.Tensor:
        with torch.no_grad():
            return beam_search_seq2seq(
                model, ids, beam=beam, decoder_start_id=0, eos_id=eos, pad_id=0
            )

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            return hf_model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                num_beams=args.num_beams, max_new_tokens=args.new_tokens, eos_token_id=eos,
                pad_token_id=0, decoder_start_token_id=0,
            )  # fmt: skip

    our_s, our_out = timed(ours, args.repeats)
    hf_s, hf_out = timed(theirs, args.repeats)
    same = our_out.shape == hf_out.shape and torch.equal(our_out, hf_out)
    our_rate = our_out[:, 1:].numel() / our_s
    hf_rate = hf_out[:, 1:].numel() / hf_s
    return f"{name:10} {our_rate:>11,.0f} {hf_rate:>9,.0f} {hf_s / our_s:>5.2f}x {str(same):>12}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["t5-tiny", "bart-tiny", "t5-30m"])
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # the allocator policy of lmforge's own commands
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; beams {args.num_beams}, "
        f"batch {args.batch_size}, input {args.input_len}, up to {args.new_tokens} new tokens"
    )
    print(f"{'model':10} {'ours tok/s':>11} {'HF tok/s':>9} {'ratio':>6} {'same output':>12}")
    for name in args.models:
        print(bench_model(name, args))


if __name__ == "__main__":
    main()
