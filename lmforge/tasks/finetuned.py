"""Load a fine-tuned run (task.json + best checkpoint) back into its task and model."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lmforge.config.finetune import task_entry
from lmforge.config.loading import from_dict
from lmforge.data.tokenizer import load_tokenizer
from lmforge.kernels import apply_cpu_kernels
from lmforge.models.lm import build_model
from lmforge.models.weights import load_model_weights
from lmforge.run_dir import read_model_config, read_task_info, resolve_checkpoint, tokenizer_dir
from lmforge.tasks.base import Task, task_class


def load_finetuned(run_dir: str | Path) -> tuple[Task, nn.Module]:
    """(task with its labels restored, model in eval mode with the best weights) of a run."""
    run_dir = Path(run_dir)
    info = read_task_info(run_dir)
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
