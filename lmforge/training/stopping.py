"""Graceful stop: SIGTERM and the first Ctrl-C (SIGINT) end training after the current step.

Cluster schedulers stop a job with SIGTERM and a grace period before SIGKILL (SLURM at the end of
the time limit or on preemption, `--signal=B:TERM@120` to get it early; Kubernetes on eviction).
The handler only raises a flag: the step under way, and a checkpoint write under way, run to
their end untouched, and the loop checks the flag between steps. A second Ctrl-C raises
KeyboardInterrupt at once (a write it interrupts leaves a `.tmp` directory that readers ignore;
`LATEST` still names the previous complete checkpoint).

Under torchrun every rank must stop after the same step, or they would checkpoint different steps
and hang in each other's collectives: `should_stop` sums the flag over ranks (`agree`), once per
step, a one-number all-reduce next to the gradients' millions.

Exit codes are 128 + the signal number, what a shell reports for a process the signal ended: 143
for SIGTERM, 130 for SIGINT. Schedulers read non-zero as "not finished" (a Kubernetes Job with
restartPolicy OnFailure restarts it, a SLURM job marked --requeue is requeued), which is right: the
run is not done, and rerunning the same command continues it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """A context in which SIGTERM and the first SIGINT request a stop instead of ending the process.

    Outside the main thread (where Python cannot install handlers) it installs nothing and never
    requests a stop. The previous handlers come back on exit.
    """

    def __init__(self, agree: Callable[[bool], bool] = bool) -> None:
        """`agree(flag)` is True when any rank's flag is (one process: the flag itself)."""
        self.agree = agree
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for number in _SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        # Nothing is printed here: a handler runs between two bytecodes of whatever the loop was
        # doing, possibly inside a write to stderr, which is not reentrant.
        if number == signal.SIGINT and self.signal_number is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop at once
        if self.signal_number is None:
            self.signal_number = number

    @property
    def is_requested(self) -> bool:
        """Whether this process received a stop signal."""
        return self.signal_number is not None

    def should_stop(self) -> bool:
        """Whether any rank received a stop signal; call it on every rank at the same step."""
        return self.agree(self.is_requested)

    @property
    def signal_name(self) -> str:
        """SIGTERM or SIGINT: this process's signal, or SIGTERM for a rank stopped by another's."""
        return signal.Signals(self.signal_number or signal.SIGTERM).name

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal_number or signal.SIGTERM)
