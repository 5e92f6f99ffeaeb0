"""Classification labels: the training file's label set (or `--task.labels`) is the whole set; a
stray label anywhere is one line naming its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.config.finetune import ClassifyOptions
from lmforge.data.labelled import read_classification
from lmforge.errors import LmforgeError
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.classification import ClassificationTask

FAST = ["--log.progress=false", "--log.tensorboard=false", "--train.batch_size=4"]


def _write(path: Path, labels: list[str]) -> Path:
    """A plain `LABEL TEXT` file, one line per label."""
    path.write_text("".join(f"{label} text number {i} .\n" for i, label in enumerate(labels)))
    return path


def _task(tiny_pretrained, labels: str = "") -> ClassificationTask:
    model, tokenizer, _ = load_pretrained(tiny_pretrained("bert-tiny"))
    return ClassificationTask(ClassifyOptions(labels=labels), tokenizer, model.config)


def _read(path: Path):
    return read_classification(path, text_fields=["text"], label_field="label")


@pytest.mark.parametrize("stray", ["positive", "1.5"])
def test_stray_validation_label_names_file_and_line(tiny_pretrained, tmp_path, capsys, stray):
    train = _write(tmp_path / "train.txt", ["0", "1"] * 4)
    dev = _write(tmp_path / "dev.txt", ["1", "0", stray, "1"])
    code = main(["finetune", "classify", str(tiny_pretrained("bert-tiny")),
                 f"--run.dir={tmp_path / 'run'}", f"--data.train={train}",
                 f"--data.validation={dev}", *FAST])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {dev}:3: label '{stray}' is not one of the training labels")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("stray", "kind", "others"),
    [("positive", "a word", "integers (0, 1)"), ("1.5", "a decimal number", "integers (0, 1)"),
     ("3", "an integer", "words (negative, positive)")],
)  # fmt: skip
def test_a_training_label_of_another_kind_is_refused(
    tiny_pretrained, tmp_path, stray, kind, others
):
    common = ["0", "1"] if others.startswith("integers") else ["negative", "positive"]
    train = _write(tmp_path / "train.txt", common * 3 + [stray] + common)
    with pytest.raises(LmforgeError) as error:
        _task(tiny_pretrained).fit_labels(_read(train))
    assert str(error.value).startswith(f"{train}:7: label '{stray}' is {kind}, but the other "
                                       f"labels are {others}")  # fmt: skip
    assert "--task.labels" in str(error.value)


def test_labels_of_one_kind_are_accepted_in_numeric_order(tiny_pretrained, tmp_path):
    task = _task(tiny_pretrained)
    task.fit_labels(_read(_write(tmp_path / "t.txt", ["10", "2", "-1", "2"])))
    assert task.labels == ["-1", "2", "10"]
    task.fit_labels(_read(_write(tmp_path / "w.txt", ["DESC:manner", "NUM:date", "1st"])))
    assert task.labels == ["1st", "DESC:manner", "NUM:date"]  # "1st" is a word


def test_explicit_labels_allow_a_mixed_set_in_the_order_given(tiny_pretrained, tmp_path):
    task = _task(tiny_pretrained, labels="1,0,other")
    task.fit_labels(_read(_write(tmp_path / "train.txt", ["0", "1", "other", "1"])))
    assert task.labels == ["1", "0", "other"]


def test_explicit_labels_refuse_a_training_label_outside_them(tiny_pretrained, tmp_path):
    train = _write(tmp_path / "train.txt", ["0", "1", "2", "1"])
    with pytest.raises(LmforgeError, match=rf"^{train}:3: label '2' is not one of --task.labels"):
        _task(tiny_pretrained, labels="0,1").fit_labels(_read(train))
