"""`lmforge pretrain PRESET_OR_YAML [--section.key=value ...]` (also under torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmforge.config.loading import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a model from a preset or YAML config",
        description=(
            "Pretrain a model. Overrides use dotted keys, e.g. --data.path=DATA --run.dir=runs/a "
            "--train.max_steps=2000 --train.lr=3e-4 --model.d_model=128. "
            "Under `torchrun --nproc-per-node N -m lmforge pretrain ...` it trains data-parallel."
        ),
    )
    parser.add_argument(
        "config",
        metavar="PRESET_OR_YAML",
        help="a model preset, a YAML file, or a run/checkpoint directory to continue pretraining "
        "from (its model settings and weights; e.g. made by `lmforge convert --from-hf`)",
    )
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from lmforge.api import pretrain

    result = pretrain(args.config, parse_overrides(args.overrides))
    if result.is_main:
        summarize(result.run_dir, result.metrics)
    return 0


def summarize(run_dir: Path, final: dict) -> None:
    if final:
        line = (
            f"step {final['step']}: val loss {final['val_loss']:.4f} nats/token, "
            f"perplexity {final['val_perplexity']:.2f}"
        )
        if "val_bpb" in final:
            line += f", {final['val_bpb']:.4f} bits per byte"
        if "val_accuracy" in final:
            line += f", accuracy {final['val_accuracy']:.4f}"
        print(line)
    print(f"run saved in {run_dir} (curves: {run_dir / 'curves.png'})")
