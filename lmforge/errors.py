"""The one exception type for bad user input.

The command line prints its message as a single line and exits non-zero; everything else that goes
wrong is a bug and keeps its traceback.
"""


class LmforgeError(ValueError):
    """Bad input from the user; the message says what is wrong and how to fix it, in one line."""
