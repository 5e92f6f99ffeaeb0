"""Training throughput of our models vs Hugging Face, and a profile of one training step.

    python bench/train_throughput.py [lmforge bench options]          same as `lmforge bench`
    python bench/train_throughput.py --profile gpt2-30m:bf16 [--batch-size 8 --seq-len 256]

The timing logic lives in `lmforge/bench.py` (shared with `lmforge bench`); this script adds the
torch.profiler view of our training step (CPU ops sorted by self time).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from lmforge.bench import DEFAULT_SHAPES, _batch, our_train_step
from lmforge.cli.main import main as lmforge_main
from lmforge.config.presets import get_preset
from lmforge.kernels.allocator import keep_freed_memory
from lmforge.models.lm import build_model


def profile_step(spec: str, batch_size: int | None, seq_len: int | None, rows: int) -> None:
    name, precision = spec.split(":")
    default_batch, default_seq = DEFAULT_SHAPES.get(name, (8, 256))
    cfg = get_preset(name)
    inputs, _ = _batch(cfg, batch_size or default_batch, seq_len or default_seq)
    input_ids = inputs["input_ids"]
    step = our_train_step(build_model(cfg).train(), input_ids, precision, inputs)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    print(f"{name} {precision} {tuple(input_ids.shape)}, 2 steps, torch {torch.__version__}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--profile", metavar="PRESET:PRECISION")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--rows", type=int, default=25)
    args, rest = parser.parse_known_args(argv)
    keep_freed_memory()  # the allocator policy of lmforge's own commands
    if args.profile:
        profile_step(args.profile, args.batch_size, args.seq_len, args.rows)
        return 0
    return lmforge_main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
