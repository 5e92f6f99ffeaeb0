"""`lmforge bench [--against-hf]`: training throughput of our models (and of HF's, same shapes)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lmforge.bench import DEFAULT_MODELS, DEFAULT_PRECISIONS, BenchResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure training throughput (tokens/s, fraction of the matmul peak)",
        description=(
            "Time training steps (forward, backward, AdamW step) of preset models on random "
            "tokens, in each precision; with --against-hf also the Hugging Face model of the same "
            "shape and weights. Reports the median of --steps timed steps after --warmup."
        ),
    )
    parser.add_argument("--against-hf", action="store_true", help="also time the HF model")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="PRESET")
    parser.add_argument(
        "--precisions", nargs="+", default=list(DEFAULT_PRECISIONS), choices=["fp32", "bf16"]
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def _format_row(result: BenchResult) -> str:
    row = (
        f"{result.model:<12} {result.precision:<5} {result.batch_size:>3}x{result.seq_len:<5} "
        f"{result.matmul_peak_flops / 1e9:>7,.0f} "
        f"{result.ours_tokens_per_s:>10,.0f} {result.fraction_of_matmul_peak:>7.1%}"
    )
    if result.hf_tokens_per_s is not None:
        row += (
            f" {result.hf_tokens_per_s:>10,.0f} {result.hf_fraction_of_matmul_peak:>7.1%}"
            f" {result.ratio:>6.2f}x"
        )
    return row


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from lmforge.bench import run_benchmarks

    for name, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            print(f"error: {name} must be >= 1", file=sys.stderr)
            return 2
    header = (
        f"{'model':<12} {'prec':<5} {'shape':<9} {'peak GF':>7} {'ours tok/s':>10} {'of peak':>7}"
    )
    if args.against_hf:
        header += f" {'HF tok/s':>10} {'of peak':>7} {'ratio':>7}"
    if not args.json:
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
            "ours: fused AdamW (build_optimizer); HF: torch.optim.AdamW defaults; "
            f"median of {args.steps} steps after {args.warmup} warm-up"
        )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average before: {load} (other processes skew absolute numbers)")
        print("one line per (model, precision), each with its matmul peak measured just before ...")
    total = len(args.models) * len(args.precisions)
    results = run_benchmarks(
        args.models,
        args.precisions,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        against_hf=args.against_hf,
    )
    if not args.json:
        print(header)
    for result in tqdm(results, total=total, desc="bench", unit="shape", file=sys.stderr):
        # tqdm.write prints above the bar, so rows are not overwritten on a terminal.
        line = json.dumps(result.as_dict()) if args.json else _format_row(result)
        tqdm.write(line, file=sys.stdout)
    if not args.json:
        print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0
