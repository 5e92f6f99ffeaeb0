"""`lmforge pretrain PRESET_OR_YAML [--section.key=value ...]` (also under torchrun)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lmforge.config.loading import parse_overrides, user_keys
from lmforge.run_dir import load_pretraining_config

logger = logging.getLogger(__name__)


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
    from lmforge.distributed.setup import cleanup
    from lmforge.training.plot import plot_run
    from lmforge.training.run import prepare_trainer

    overrides = parse_overrides(args.overrides)
    config = load_pretraining_config(args.config, overrides)
    trainer = prepare_trainer(config, explicit_keys=user_keys(args.config, overrides))
    try:
        final = trainer.fit()
        if trainer.context.is_main:
            summarize(Path(trainer.config.run.dir), final)
            plot_run(trainer.config.run.dir)
    finally:
        cleanup()
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
