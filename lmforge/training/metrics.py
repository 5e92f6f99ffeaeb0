"""Training metrics: `RUN_DIR/metrics.jsonl` (one JSON object per line) mirrored to TensorBoard.

The JSONL file is the record of a run (the plot command and tests read it); TensorBoard is a
convenience and is skipped when the package is missing. Rows carry `step` plus scalars, e.g.
`loss`, `lr`, `tokens_per_s`, `mfu`, or for evaluation rows `val_loss`, `val_accuracy`, `val_bpb`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from lmforge.run_dir import METRICS_FILE, TENSORBOARD_DIR, write_text

logger = logging.getLogger(__name__)


class MetricsWriter:
    """Append metric rows to `RUN_DIR/metrics.jsonl` and, optionally, TensorBoard.

    Only the writer process (rank 0) touches the disk; on other ranks every method is a no-op,
    so the trainer can call `log` unconditionally. When resuming, call `truncate_after(step)`
    before the first `log` so rows from beyond the checkpoint are not duplicated.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, tensorboard: bool, is_writer: bool):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.is_writer = is_writer
        self._use_tensorboard = tensorboard and is_writer
        self._tensorboard: Any = None  # created on first log, so truncate_after can purge it
        self._purge_step: int | None = None
        self._file: IO[str] | None = None

    def truncate_after(self, step: int) -> None:
        """Drop rows with `row["step"] > step` (from metrics.jsonl and, on open, TensorBoard)."""
        if not self.is_writer:
            return
        self._close_file()
        self._purge_step = step + 1
        if not self.path.is_file():
            return
        kept = [row for row in read_metrics(self.run_dir) if row.get("step", 0) <= step]
        write_text(self.path, "".join(_to_line(row) for row in kept))

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row; it must hold `step` (int) and otherwise numbers (tensors allowed)."""
        if not self.is_writer:
            return
        if "step" not in row:
            raise ValueError(f"metrics row needs a 'step' key, got keys {sorted(row)}")
        clean = {key: _plain(value) for key, value in row.items()}
        if self._file is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # kept open across log calls
        # Flushed per line: a crashed run keeps every row logged before the crash.
        self._file.write(_to_line(clean))
        self._file.flush()
        self._mirror_to_tensorboard(clean)

    def close(self) -> None:
        self._close_file()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _mirror_to_tensorboard(self, row: Mapping[str, Any]) -> None:
        if not self._use_tensorboard:
            return
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; metrics go to %s only", self.path)
                self._use_tensorboard = False
                return
            self._tensorboard = SummaryWriter(
                str(self.run_dir / TENSORBOARD_DIR), purge_step=self._purge_step
            )
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tensorboard.add_scalar(key, value, step)
        self._tensorboard.flush()


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of `RUN_DIR/metrics.jsonl` in file order; [] when there is no file.

    A last line cut short by a crash is skipped rather than failing the reader.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("skipping an unreadable line in %s", path)
    return rows


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars become Python numbers; everything else passes through."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _to_line(row: Mapping[str, Any]) -> str:
    # NaN/inf are written as JSON's non-standard NaN/Infinity tokens, which Python reads back;
    # a diverged loss is exactly the kind of value the record must keep.
    return json.dumps(row, separators=(",", ":")) + "\n"
