"""The task registry (`lmforge.config.finetune.TASKS`): every entry finds its Task class, whose
name is the entry's, and unknown names are refused in one line naming the choices."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lmforge.config.finetune import TASKS, load_finetune_config
from lmforge.errors import LmforgeError
from lmforge.tasks.base import Task, task_class


@pytest.mark.parametrize("name", list(TASKS))
def test_every_registered_task_finds_its_class(name: str) -> None:
    cls = task_class(name)
    assert issubclass(cls, Task) and cls.name == name


@pytest.mark.parametrize(
    "unknown",
    [
        lambda: task_class("sentiment"),
        lambda: load_finetune_config("sentiment", "runs/x", ["--run.dir=runs/y"]),
    ],
)
def test_unknown_task_names_the_choices(unknown) -> None:  # noqa: ANN001
    with pytest.raises(LmforgeError, match="unknown task 'sentiment'; choose one of classify, tag"):
        unknown()


def test_config_refuses_options_of_another_task() -> None:
    config = load_finetune_config("tag", "runs/x", ["--run.dir=runs/y", "--data.train=a"])
    with pytest.raises(LmforgeError, match="task options of classify must be ClassifyOptions"):
        replace(config, task_name="classify")
