"""The one exception type for bad user input, and a helper that shortens others' messages.

The command line prints its message as a single line and exits non-zero; everything else that goes
wrong is a bug and keeps its traceback.
"""

import textwrap


class LmforgeError(ValueError):
    """Bad input from the user; the message says what is wrong and how to fix it, in one line."""


def one_line(error: BaseException, width: int = 200) -> str:
    """`error`'s message on one line, shortened: for quoting a third-party exception (whose
    messages often run over several lines) inside an `LmforgeError`."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return textwrap.shorten(text, width, placeholder=" ...") if text else type(error).__name__
