"""`lmforge pretrain PRESET_OR_YAML [--section.key=value ...]` (also under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.config.loading import parse_overrides
from lmforge.run_dir import BEST_DIR, CHECKPOINTS_DIR, TRAINER_STATE_FILE, best_checkpoint


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
        print("final " + _describe(final))
    best = _best_eval(run_dir)
    if best:
        where = run_dir / CHECKPOINTS_DIR / BEST_DIR
        print(f"best  {_describe(best)} (weights: {where})")
    print(f"run saved in {run_dir} (curves: {run_dir / 'curves.png'})")


def _describe(metrics: dict) -> str:
    line = (
        f"step {metrics['step']}: val loss {metrics['val_loss']:.4f} nats/token, "
        f"perplexity {metrics['val_perplexity']:.2f}"
    )
    if "val_bpb" in metrics:
        line += f", {metrics['val_bpb']:.4f} bits per byte"
    if "val_accuracy" in metrics:
        line += f", accuracy {metrics['val_accuracy']:.4f}"
    return line


def _best_eval(run_dir: Path) -> dict:
    """The evaluation checkpoints/best was kept for; empty without one."""
    best = best_checkpoint(run_dir)
    if best is None:
        return {}
    try:
        return json.loads((best / TRAINER_STATE_FILE).read_text(encoding="utf-8")).get("eval", {})
    except (OSError, ValueError):
        return {}
