"""Sentence classification: input encoding per family, metrics, and `lmforge finetune classify`
+ `lmforge predict` end to end on a slice of SST-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.config.finetune import ClassifyOptions
from lmforge.data.labelled import ClassificationExample, read_classification
from lmforge.errors import LmforgeError
from lmforge.evaluation.classification import accuracy, macro_f1
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.classification import ClassificationTask
from tests.conftest import shared_file

FAST = ["--log.progress=false", "--log.tensorboard=false", "--train.batch_size=8"]


def test_macro_f1_matches_hand_computation() -> None:
    predicted = ["a", "a", "b", "c", "a"]
    gold = ["a", "b", "b", "b", "c"]
    # a: TP 1, predicted 3, actual 1 -> 2/4; b: TP 1, predicted 1, actual 3 -> 2/4; c: 0.
    assert macro_f1(predicted, gold) == pytest.approx(100 * (0.5 + 0.5 + 0.0) / 3)
    assert accuracy(predicted, gold) == pytest.approx(40.0)


def test_reads_csv_jsonl_and_label_text_lines(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('premise,hypothesis,label\n"x, y",z,yes\n')
    (tmp_path / "b.jsonl").write_text('{"text": "fine film", "label": 1}\n')
    (tmp_path / "c.txt").write_text("DESC:manner How did it go ?\n")
    pair = read_classification(tmp_path / "a.csv", text_fields=["premise", "hypothesis"],
                               label_field="label")  # fmt: skip
    assert pair == [ClassificationExample(("x, y", "z"), "yes")]
    assert read_classification(tmp_path / "b.jsonl", text_fields=["text"], label_field="label")[
        0
    ] == ClassificationExample(("fine film",), "1")
    assert read_classification(tmp_path / "c.txt", text_fields=["text"], label_field="label")[
        0
    ] == ClassificationExample(("How did it go ?",), "DESC:manner")


def test_missing_column_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "ok", "label": 0}\n{"sentence": "no"}\n')
    with pytest.raises(LmforgeError, match=r"a.jsonl:2: no text column 'text'"):
        read_classification(tmp_path / "a.jsonl", text_fields=["text"], label_field="label")


@pytest.mark.parametrize(
    ("preset", "first", "last"),
    [("bert-tiny", "cls_id", "sep_id"), ("roberta-tiny", "bos_id", "eos_id"),
     ("gpt2-tiny", "eos_id", "eos_id"), ("t5-tiny", None, "eos_id")],
)  # fmt: skip
def test_pair_encoding_follows_the_family(tiny_pretrained, preset, first, last) -> None:
    model, tokenizer, _ = load_pretrained(tiny_pretrained(preset))
    task = ClassificationTask(
        ClassifyOptions(text_fields="a,b", max_length=12), tokenizer, model.config
    )
    task.fit_labels([ClassificationExample(("x",), "0"), ClassificationExample(("y",), "1")])
    long_text = "the quick brown fox jumps over the lazy dog " * 3
    (feature,) = task.features([ClassificationExample((long_text, "short"), "1")])
    assert len(feature.input_ids) == 12  # truncated, the longer text first
    if first:
        assert feature.input_ids[0] == getattr(tokenizer, first)
    assert feature.input_ids[-1] == getattr(tokenizer, last)
    if model.config.embedding.num_segment_types == 2:  # BERT: the second text is segment 1
        assert feature.segment_ids[0] == 0 and feature.segment_ids[-1] == 1
    assert feature.label == 1


def test_decoder_reads_the_last_real_token(tiny_pretrained) -> None:
    model, tokenizer, _ = load_pretrained(tiny_pretrained("gpt2-tiny"))
    task = ClassificationTask(ClassifyOptions(), tokenizer, model.config)
    task.fit_labels([ClassificationExample(("x",), "0"), ClassificationExample(("y",), "1")])
    classifier = task.build_model(model).eval()
    examples = [ClassificationExample(("a short one",), "0"),
                ClassificationExample(("a much longer text than the other",), "1")]  # fmt: skip
    batch = task.collate(task.features(examples))
    together = classifier(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
    alone = task.collate(task.features(examples[:1]))
    single = classifier(alone["input_ids"], alone["attention_mask"], alone["segment_ids"])
    torch.testing.assert_close(together[:1], single, atol=1e-5, rtol=1e-4)  # padding ignored


def _sst_slice(tmp_path: Path, n_train: int = 48, n_dev: int = 24) -> tuple[Path, Path]:
    train = shared_file("sst/stsa.binary.train").read_text().splitlines()[:n_train]
    dev = shared_file("sst/stsa.binary.dev").read_text().splitlines()[:n_dev]
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(dev) + "\n")
    return tmp_path / "train.txt", tmp_path / "dev.txt"


@pytest.mark.parametrize("preset", ["bert-tiny", "gpt2-tiny", "t5-tiny"])
def test_finetune_classify_and_predict_end_to_end(tiny_pretrained, tmp_path, preset) -> None:
    train, dev = _sst_slice(tmp_path)
    run = tmp_path / "run"
    code = main(["finetune", "classify", str(tiny_pretrained(preset)), f"--run.dir={run}",
                 f"--data.train={train}", f"--data.validation={dev}", "--train.epochs=2",
                 "--task.label_words=0=negative,1=positive", *FAST])  # fmt: skip
    assert code == 0
    results = json.loads((run / "metrics.json").read_text())
    expected = {"accuracy", "macro_f1"} | ({"loss"} if preset != "t5-tiny" else set())
    assert set(results["validation"]) == expected
    assert 0 <= results["validation"]["accuracy"] <= 100
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {"text", "prediction", "label"} <= set(rows[0])
    assert (run / "curves.png").is_file()
    inputs = tmp_path / "new.txt"
    inputs.write_text("a gorgeous , witty film .\nan utter mess .\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in predicted] == ["a gorgeous , witty film .", "an utter mess ."]
    assert all(row["prediction"] in {"0", "1", "negative", "positive"} or preset == "t5-tiny"
               for row in predicted)  # fmt: skip


def test_unseen_validation_label_is_one_clear_line(tiny_pretrained, tmp_path, capsys) -> None:
    train, dev = _sst_slice(tmp_path, 16, 4)
    dev.write_text(dev.read_text() + "7 a label that training never saw .\n")
    code = main(["finetune", "classify", str(tiny_pretrained("bert-tiny")),
                 f"--run.dir={tmp_path / 'run'}", f"--data.train={train}",
                 f"--data.validation={dev}", *FAST])  # fmt: skip
    assert code == 2
    assert f"{dev}:5: label '7' is not one of the training labels (0, 1)" in capsys.readouterr().err


def test_task_the_family_cannot_do_is_refused(tiny_pretrained, tmp_path, capsys) -> None:
    train, dev = _sst_slice(tmp_path, 8, 4)
    code = main(["finetune", "causal", str(tiny_pretrained("bert-tiny")),
                 f"--run.dir={tmp_path / 'run'}", f"--data.train={train}",
                 f"--data.validation={dev}", *FAST])  # fmt: skip
    assert code == 2
    assert "an encoder model cannot do `causal`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written for a refused run
