"""`lmforge`: the command line.

Each subcommand lives in its own module with `register(subparsers)`, which adds a parser whose
`func` default runs the command and returns an exit code. Bad input (`LmforgeError`) prints one
line, `error: ...`, and exits 2; so does a write the file system refused (disk full, file size
limit, permission denied: `errors.write_failure_errno`), naming the file. A training run stopped
by SIGTERM or Ctrl-C prints what it saved and exits 128 + the signal number
(docs/reliability.md). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import sys
from types import TracebackType

from lmforge.errors import (
    LmforgeError,
    RunStopped,
    describe_write_failure,
    write_failure_errno,
)

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
    except Exception as error:
        code = write_failure_errno(error)
        if code is None:
            raise
        print(f"error: {_write_failure_line(error, code)}", file=sys.stderr)
        return 2


def _write_failure_line(error: Exception, code: int) -> str:
    """A refused write that no caller reported (`errors.reporting_write_failure` does where the
    caller knows more): the file, and why nothing complete was lost."""
    path = getattr(error, "filename", None) or _file_open_for_writing(error.__traceback__)
    if path is None:
        target = "cannot write a file"
    elif code in (errno.EACCES, errno.EPERM):  # also met opening a file to read: no verb
        target = str(path)
    else:
        target = f"cannot write {path}"
    return (
        f"{target}: {describe_write_failure(code)}; files written before are intact (lmforge "
        "replaces files atomically and appends whole lines)"
    )


def _file_open_for_writing(trace: TracebackType | None) -> str | None:
    """The name of the file the failing frame had open for writing: Python's own write errors
    carry no file name (`OSError.filename` is None), but the frame holds the open file."""
    names = []
    while trace is not None:
        for value in trace.tb_frame.f_locals.values():
            mode = getattr(value, "mode", "")
            if isinstance(value, io.IOBase) and isinstance(mode, str) and set(mode) & set("wax+"):
                names.append(str(getattr(value, "name", "")) or None)
        trace = trace.tb_next
    return next((name for name in reversed(names) if name), None)


if __name__ == "__main__":
    sys.exit(main())
