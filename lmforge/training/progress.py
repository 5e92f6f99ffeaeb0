"""The training progress bar (tqdm): step count, ETA, loss, learning rate and throughput."""

from __future__ import annotations

import sys

from tqdm import tqdm


class TrainingProgress:
    """A tqdm bar from `initial` (the resume step) to `total` (max steps), on stderr.

    `enabled=False` hides the bar (e.g. logs redirected to a file); `is_main=False` (ranks other
    than 0) silences everything, `write` included, so only one process talks to the user.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        enabled: bool = True,
        is_main: bool = True,
        rate_name: str = "tok_s",
    ):
        self.is_main = is_main
        self.rate_name = rate_name  # what `update`'s rate counts per second: tokens, examples
        self._bar = tqdm(
            total=total,
            initial=initial,
            disable=not (enabled and is_main),
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
            smoothing=0.1,  # ETA follows recent speed; eval pauses would skew an all-time mean
        )

    def update(self, step: int, loss: float, lr: float, rate: float) -> None:
        """Move the bar to `step` (steps done so far) and show the latest numbers."""
        if self._bar.disable:
            return
        self._bar.set_postfix(
            refresh=False, loss=f"{loss:.4f}", lr=f"{lr:.2e}", **{self.rate_name: _human(rate)}
        )
        self._bar.update(step - self._bar.n)

    def write(self, message: str) -> None:
        """Print a line above the bar (or plainly when the bar is hidden); main process only."""
        if not self.is_main:
            return
        if self._bar.disable:
            print(message, file=sys.stderr, flush=True)
        else:
            self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _human(value: float) -> str:
    """12345.6 -> '12.3k': throughput fits in a narrow terminal."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"
