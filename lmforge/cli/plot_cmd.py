"""`lmforge plot RUN_DIR`: draw a run's training curves into RUN_DIR/curves.png."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="plot loss, validation and learning-rate curves of a run",
        description="Read RUN_DIR/metrics.jsonl and write RUN_DIR/curves.png.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (--run.dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.training.plot import plot_run  # matplotlib only when the command runs

    print(plot_run(args.run_dir))
    return 0
