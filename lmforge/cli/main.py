"""`lmforge`: the command line.

Each subcommand lives in its own module with `register(subparsers)`, which adds a parser whose
`func` default runs the command and returns an exit code. Bad input (`LmforgeError`) prints one
line, `error: ...`, and exits 2; a training run stopped by SIGTERM or Ctrl-C prints what it saved
and exits 128 + the signal number (docs/reliability.md); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lmforge.errors import LmforgeError, RunStopped

# Modules under lmforge.cli that each register one subcommand (or a group of them).
_COMMAND_MODULES = (
    "tokenizer_cmd",
    "data_cmd",
    "pretrain_cmd",
    "generate_cmd",
    "fill_mask_cmd",
    "plot_cmd",
    "bench_cmd",
    "quickstart_cmd",
    "convert_cmd",
    "finetune_cmd",
    "evaluate_cmd",
)

# Commands that run models step after step: their processes keep freed memory for reuse
# (kernels.allocator); data preparation and conversions keep glibc's own policy.
_MODEL_COMMANDS = frozenset(
    ("pretrain", "generate", "fill-mask", "bench", "quickstart", "finetune", "evaluate", "predict")
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Pretrain transformer language models (encoder, decoder, encoder-decoder).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"lmforge.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if args.command in _MODEL_COMMANDS:
        from lmforge.kernels.allocator import keep_freed_memory
        from lmforge.kernels.dispatch import default_device

        keep_freed_memory(default_device())  # --run.device=cpu: applied again at device choice
    try:
        return int(args.func(args) or 0)
    except LmforgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stop:
        if str(stop):
            print(stop, file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
