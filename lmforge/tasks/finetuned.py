"""Load a fine-tuned run (task.json + best checkpoint) back into its task and model.

A run is finished once it has written metrics.json (after reloading its best checkpoint and
evaluating it). A run that stopped before (killed, stopped, crashed) may hold a checkpoint that
is only the best of the evaluations so far, or none: it is refused unless the caller allows a
partial run.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lmforge.config.finetune import task_entry
from lmforge.config.loading import from_dict
from lmforge.data.tokenizer import load_tokenizer
from lmforge.errors import LmforgeError
from lmforge.kernels import apply_cpu_kernels
from lmforge.models.lm import build_model
from lmforge.models.weights import load_model_weights
from lmforge.run_dir import (
    RESULTS_FILE,
    latest_checkpoint,
    read_model_config,
    read_task_info,
    resolve_checkpoint,
    tokenizer_dir,
)
from lmforge.tasks.base import Task, task_class


def load_finetuned(run_dir: str | Path, *, allow_partial: bool = False) -> tuple[Task, nn.Module]:
    """(task with its labels restored, model in eval mode with the best weights) of a run.

    allow_partial: accept a run that never finished (its best checkpoint so far)."""
    run_dir = Path(run_dir)
    info = read_task_info(run_dir)
    check_finished(run_dir, allow_partial=allow_partial)
    checkpoint = resolve_checkpoint(run_dir)
    tokenizer = load_tokenizer(tokenizer_dir(checkpoint))
    model_config = read_model_config(checkpoint, tokenizer)
    name = info["task"]
    options = from_dict(task_entry(name).options, info["options"], prefix="task.")
    task = task_class(name)(options, tokenizer, model_config)
    task.load_state(info)
    model = apply_cpu_kernels(task.build_model(build_model(model_config)))  # the head's linears
    load_model_weights(checkpoint, model)
    return task, model.eval()


def check_finished(run_dir: Path, *, allow_partial: bool = False) -> None:
    """Refuse a fine-tuning run without its results (metrics.json) unless `allow_partial`, and
    one without any checkpoint (no evaluation ever finished) in any case."""
    if latest_checkpoint(run_dir) is None:
        raise LmforgeError(
            f"{run_dir} holds no checkpoint: the fine-tuning run never finished an evaluation; "
            "rerun `lmforge finetune` (a lower --eval.every evaluates sooner)"
        )
    if not allow_partial and not (run_dir / RESULTS_FILE).is_file():
        raise LmforgeError(
            f"{run_dir} is an unfinished fine-tuning run (no {RESULTS_FILE}): its checkpoint is "
            "only the best so far; rerun `lmforge finetune` to finish it, or pass --allow-partial "
            "to use it anyway"
        )
