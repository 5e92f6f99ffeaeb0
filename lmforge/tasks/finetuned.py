"""Load a fine-tuned run (task.json + best checkpoint) back into its task and model."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from lmforge.config.finetune import task_entry
from lmforge.config.loading import from_dict, model_config_from_dict
from lmforge.data.tokenizer import load_tokenizer
from lmforge.errors import LmforgeError
from lmforge.kernels import apply_cpu_kernels
from lmforge.models.lm import build_model
from lmforge.tasks.base import Task, task_class
from lmforge.training.checkpoint import (
    MODEL_CONFIG_FILE,
    load_model_weights,
    resolve_checkpoint,
)


def load_finetuned(run_dir: str | Path) -> tuple[Task, nn.Module]:
    """(task with its labels restored, model in eval mode with the best weights) of a run."""
    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / "task.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise LmforgeError(
            f"{run_dir} is not a fine-tuning run (no readable task.json); "
            "pass the --run.dir of `lmforge finetune`"
        ) from None
    checkpoint = resolve_checkpoint(run_dir)
    model_config = model_config_from_dict(
        json.loads((checkpoint / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    )
    name = info["task"]
    options = from_dict(task_entry(name).options, info["options"], prefix="task.")
    task = task_class(name)(options, load_tokenizer(run_dir), model_config)
    task.load_state(info)
    model = apply_cpu_kernels(task.build_model(build_model(model_config)))  # the head's linears
    load_model_weights(checkpoint, model)
    return task, model.eval()
