"""A task/model pair that makes no sense is refused with one line naming the model types that
work, for every task and every family it cannot serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.config.finetune import TASKS
from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.tasks.base import task_class

FAMILIES = {"encoder": "bert-tiny", "decoder": "gpt2-tiny", "encoder_decoder": "t5-tiny"}
REFUSED = [
    (task, family)
    for task in TASKS
    for family in FAMILIES
    if family not in task_class(task).families
]


@pytest.mark.parametrize(("task", "family"), REFUSED)
def test_task_refuses_a_family_it_cannot_serve_in_one_line(task: str, family: str) -> None:
    config = get_preset(FAMILIES[family])
    with pytest.raises(LmforgeError) as refused:
        task_class(task)(None, None, config)  # refused before the options or tokenizer are read
    message = str(refused.value)
    assert "\n" not in message and f"cannot do `{task}`; it works with" in message
    for working in task_class(task).families:
        assert working.replace("_", "-") + " (" in message


def test_finetune_tag_with_t5_prints_one_line(tiny_pretrained, tmp_path: Path, capsys) -> None:
    code = main(["finetune", "tag", str(tiny_pretrained("t5-tiny")),
                 f"--run.dir={tmp_path / 'run'}", "--data.train=x.conll"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    expected = ("an encoder-decoder model cannot do `tag`; it works with encoder (BERT, RoBERTa) "
                "or decoder (GPT-2, BLOOM) models")  # fmt: skip
    assert expected in err
