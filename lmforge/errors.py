"""The one exception type for bad user input, and the recognition of failed writes.

The command line prints its message as a single line and exits non-zero; everything else that goes
wrong is a bug and keeps its traceback. A write that the file system refuses (disk full, file
size limit, quota, permission denied, read-only file system) is the user's to fix, not a bug:
`write_failure_errno` recognises it, `reporting_write_failure` turns it into an `LmforgeError`
where the caller knows what was being written, and the CLI's top-level handler names the file
where no caller did.
"""

import contextlib
import errno
import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

WRITE_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
    if code is not None
)
"""OS errors of a refused write that the user fixes (free space, raise a limit, fix permissions)."""

# safetensors (Rust) hides the OSError in its message: "I/O error: File too large (os error 27)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
# torch.save (C++) reports a short write without any error code.
_TORCH_SHORT_WRITE = re.compile(r"PytorchStreamWriter failed writing|unexpected pos \d+ vs \d+")


class LmforgeError(ValueError):
    """Bad input from the user; the message says what is wrong and how to fix it, in one line."""


class RunStopped(Exception):
    """Training stopped on request (SIGTERM, Ctrl-C) after saving what it keeps: not a failure.

    The command line prints the message (one line; empty on ranks other than 0) and exits with
    `exit_code`, 128 + the signal number as a shell reports a process ended by that signal.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException, width: int = 200) -> str:
    """`error`'s message on one line, shortened: for quoting a third-party exception (whose
    messages often run over several lines) inside an `LmforgeError`."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return textwrap.shorten(text, width, placeholder=" ...") if text else type(error).__name__


def write_failure_errno(error: BaseException) -> int | None:
    """The errno of a write the file system refused (one of `WRITE_ERRNOS`; 0 when a library
    reports the short write without one), or None when `error` is something else."""
    if isinstance(error, OSError):
        return error.errno if error.errno in WRITE_ERRNOS else None
    if isinstance(error, LmforgeError) or not isinstance(error, Exception):
        return None
    match = _RUST_OS_ERROR.search(str(error))
    if match:
        return int(match.group(1)) if int(match.group(1)) in WRITE_ERRNOS else None
    if isinstance(error, RuntimeError) and _TORCH_SHORT_WRITE.search(str(error)):
        return 0
    return None


def describe_write_failure(code: int) -> str:
    """What went wrong, with the advice that fits it (`os.strerror` of a `WRITE_ERRNOS` code)."""
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{os.strerror(code)}; fix the permissions or choose another folder"
    if code == 0:
        return "the file system accepted only part of it (disk full or a file size limit?)"
    return f"{os.strerror(code)}; free space or raise the limit (ulimit -f)"


@contextlib.contextmanager
def reporting_write_failure(
    target: object, *, intact: str, discard: Path | None = None
) -> Iterator[None]:
    """Turn a refused write inside the block into one `LmforgeError` line naming `target` (what
    was being written) and `intact` (what the failure left untouched), after deleting `discard`
    (the partial output, which holds the space a rerun needs); other errors pass unchanged."""
    try:
        yield
    except Exception as error:
        code = write_failure_errno(error)
        if code is None:
            raise
        if discard is not None:
            shutil.rmtree(discard, ignore_errors=True)
        raise LmforgeError(
            f"cannot write {target}: {describe_write_failure(code)}; {intact}"
        ) from error
