"""Training curves of a run: `RUN_DIR/curves.png` drawn from `RUN_DIR/metrics.jsonl`.

Panels, sharing the step axis: training and validation loss; validation bits per byte
(`val_bpb`, causal LM) and validation accuracy of the most likely token (`val_accuracy`, masked
LM) when the run logged them; the learning rate. Tokens seen label the top axis when rows
carry `tokens_seen`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.run_dir import CURVES_FILE, METRICS_FILE, read_task_info
from lmforge.training.metrics import read_metrics

# (metrics key, axis label, colour) of the validation panels drawn when a run logged the key.
_VALIDATION_PANELS = (
    ("val_bpb", "val bits per byte", "tab:green"),
    ("val_accuracy", "val accuracy", "tab:purple"),
)


def plot_run(run_dir: str | os.PathLike[str], *, metric: str | None = None) -> Path:
    """Draw the curves of `run_dir` into `RUN_DIR/curves.png` and return its path.

    `metric`: a further validation key to draw in its own panel (a fine-tuning run's task metric,
    e.g. `val_f1`); by default the one named in the run's task.json, if any."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmforgeError(
            f"run dir {run_dir} does not exist; pass the --run.dir of a training run"
        )
    rows = read_metrics(run_dir)
    if not any("loss" in row or "val_loss" in row for row in rows):
        raise LmforgeError(
            f"{run_dir / METRICS_FILE} holds no loss values yet; train first "
            "(metrics are written every log step)"
        )
    # Agg: no display needed (servers, CI); imported here so importing lmforge stays light.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or _task_metric(run_dir)
    panels = list(_VALIDATION_PANELS)
    if metric and metric not in {key for key, *_ in panels}:
        panels.append((metric, metric.replace("_", " "), "tab:red"))
    panels = [panel for panel in panels if _series(rows, panel[0])[0].size > 0]
    ratios = [3] + [2] * len(panels) + [1]
    figure, axes = plt.subplots(
        len(ratios), 1, sharex=True, figsize=(9, 1.5 + 1.4 * sum(ratios)), height_ratios=ratios
    )
    _draw_loss(axes[0], rows)
    for ax, (key, label, color) in zip(axes[1:-1], panels, strict=True):
        _draw_last_annotated(ax, rows, key, label, color)
    _draw_lr(axes[-1], rows)
    axes[-1].set_xlabel("step")
    _add_tokens_axis(axes[0], rows)
    # Two path parts: quickstart runs are all called "run", their parent names them.
    resolved = run_dir.resolve()
    figure.suptitle(f"run: {resolved.parent.name}/{resolved.name}")
    figure.tight_layout()
    out = run_dir / CURVES_FILE
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _task_metric(run_dir: Path) -> str | None:
    """`val_<metric>` of a fine-tuning run (its task.json names the metric), else None."""
    try:
        return "val_" + read_task_info(run_dir)["metric"]
    except (LmforgeError, KeyError, TypeError):
        return None


def _series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that carry `key`, in step order, last row per step winning."""
    by_step = {int(row["step"]): float(row[key]) for row in rows if key in row and "step" in row}
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def _draw_loss(ax: Any, rows: list[dict[str, Any]]) -> None:
    steps, loss = _series(rows, "loss")
    if loss.size:
        ax.plot(steps, loss, color="tab:blue", alpha=0.35 if loss.size > 50 else 1.0, lw=1)
        if loss.size > 50:
            # The raw curve is noisy; a light moving average makes the trend readable.
            ax.plot(steps, _smooth(loss), color="tab:blue", lw=1.8, label="train loss (smoothed)")
        else:
            ax.lines[-1].set_label("train loss")
    val_steps, val_loss = _series(rows, "val_loss")
    if val_loss.size:
        ax.plot(val_steps, val_loss, "o-", color="tab:orange", ms=3, label="val loss")
        _annotate_last(ax, val_steps, val_loss, "tab:orange")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")


def _draw_last_annotated(
    ax: Any, rows: list[dict[str, Any]], key: str, label: str, color: str
) -> None:
    steps, values = _series(rows, key)
    ax.plot(steps, values, "o-", color=color, ms=3)
    _annotate_last(ax, steps, values, color)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _annotate_last(ax: Any, steps: np.ndarray, values: np.ndarray, color: str) -> None:
    """Write the last value above its point, right-aligned so it stays inside the panel."""
    ax.annotate(
        f"{values[-1]:.3f}",
        (steps[-1], values[-1]),
        textcoords="offset points",
        xytext=(0, 8),
        ha="right",
        color=color,
        fontweight="bold",
    )


def _draw_lr(ax: Any, rows: list[dict[str, Any]]) -> None:
    steps, lr = _series(rows, "lr")
    if lr.size:
        ax.plot(steps, lr, color="tab:gray")
    ax.set_ylabel("lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)


def _add_tokens_axis(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Label the top axis with tokens seen, interpolated from the rows that log it."""
    steps, tokens = _series(rows, "tokens_seen")
    if steps.size < 2 or np.any(np.diff(tokens) <= 0):
        return  # interpolation needs a strictly increasing mapping
    top = ax.secondary_xaxis(
        "top",
        functions=(
            lambda s: _interp_extrapolated(s, steps, tokens),
            lambda t: _interp_extrapolated(t, tokens, steps),
        ),
    )
    top.set_xlabel("tokens seen")
    top.xaxis.set_major_formatter(lambda value, _: _human_count(value))


def _interp_extrapolated(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """`np.interp`, continued linearly past both ends (the axis margins lie outside the data;
    plain interp would clamp there and stack tick labels on top of each other)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.interp(x, xp, fp)
    left_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    right_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * left_slope, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * right_slope, y)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Exponential moving average with a window of ~2% of the points, bias-corrected."""
    alpha = 1.0 / max(2.0, values.size / 50)
    out = np.empty_like(values)
    average, weight = 0.0, 0.0
    for index, value in enumerate(values):
        average = (1 - alpha) * average + alpha * value
        weight = (1 - alpha) * weight + alpha
        out[index] = average / weight
    return out


def _human_count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"
