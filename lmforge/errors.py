"""The one exception type for bad user input.

The command line prints its message as a single line and exits non-zero; everything else that goes
wrong is a bug and keeps its traceback.
"""


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
