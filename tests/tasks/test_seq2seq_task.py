"""Sequence-to-sequence fine-tuning: framing per family, collation, metrics per kind, tiny T5 and
BART models that overfit a few pairs until beam search reproduces them, and `lmforge finetune
seq2seq` + `lmforge predict` on a slice of Multi30k."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.config.finetune import Seq2SeqOptions
from lmforge.data.pairs import Seq2SeqExample
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.seq2seq import Seq2SeqTask
from tests.conftest import shared_file

PAIRS = [
    ("one two three", "three two one"),
    ("red green", "green red"),
    ("a b c d", "d c b a"),
    ("the cat sat", "sat cat the"),
    ("open file", "file open"),
    ("print value now", "now value print"),
    ("x y", "y x"),
    ("list of items", "items of list"),
]
EXAMPLES = [Seq2SeqExample(source, [target]) for source, target in PAIRS]
FAST = ["--log.progress=false", "--log.tensorboard=false"]


def _task(tiny_pretrained, preset: str, **options) -> tuple[Seq2SeqTask, torch.nn.Module]:  # noqa: ANN001
    model, tokenizer, _ = load_pretrained(tiny_pretrained(preset))
    task = Seq2SeqTask(Seq2SeqOptions(**options), tokenizer, model.config)
    return task, task.build_model(model)


def test_t5_collate_shifts_labels_right_from_pad(tiny_pretrained) -> None:  # noqa: ANN001
    task, _ = _task(tiny_pretrained, "t5-tiny", prefix="reverse: ")
    tokenizer = task.tokenizer
    features = task.features(EXAMPLES[:2])
    assert features[0].input_ids == [*tokenizer.encode("reverse: one two three"), tokenizer.eos_id]
    assert features[0].labels == [*tokenizer.encode("three two one"), tokenizer.eos_id]
    batch = task.collate(features)
    lengths = [len(f.labels) for f in features]
    labels, decoder_inputs = batch["labels"], batch["decoder_input_ids"]
    assert labels.shape == decoder_inputs.shape == (2, max(lengths))
    for row, length in enumerate(lengths):
        assert labels[row, :length].tolist() == features[row].labels
        assert (labels[row, length:] == -100).all()
        # T5 starts decoding from <pad>; ignored label positions are fed as <pad>.
        assert decoder_inputs[row, 0] == tokenizer.pad_id
        expected = [tokenizer.pad_id if t == -100 else t for t in labels[row, :-1].tolist()]
        assert decoder_inputs[row, 1:].tolist() == expected
        source_length = len(features[row].input_ids)
        assert batch["attention_mask"][row].tolist() == [1] * source_length + [0] * (
            batch["input_ids"].shape[1] - source_length
        )


def test_bart_frames_with_bos_and_starts_from_eos(tiny_pretrained) -> None:  # noqa: ANN001
    task, _ = _task(tiny_pretrained, "bart-tiny")
    tokenizer = task.tokenizer
    feature = task.features(EXAMPLES[:1])[0]
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    assert feature.input_ids == [bos, *tokenizer.encode("one two three"), eos]
    assert feature.labels == [bos, *tokenizer.encode("three two one"), eos]
    batch = task.collate([feature])
    assert batch["decoder_input_ids"][0].tolist() == [eos, *feature.labels[:-1]]


def test_truncation_keeps_the_end_token(tiny_pretrained) -> None:  # noqa: ANN001
    task, _ = _task(tiny_pretrained, "t5-tiny", max_source_length=4, max_target_length=3)
    feature = task.features([Seq2SeqExample("a b c d e f g", ["h i j k l"])])[0]
    eos = task.tokenizer.eos_id
    assert len(feature.input_ids) == 4 and feature.input_ids[-1] == eos
    assert len(feature.labels) == 3 and feature.labels[-1] == eos


def test_decoder_start_survives_state_round_trip(tiny_pretrained) -> None:  # noqa: ANN001
    task, _ = _task(tiny_pretrained, "t5-tiny")
    other, _ = _task(tiny_pretrained, "t5-tiny")
    task.decoder_start_id = 5
    other.load_state(task.state())
    assert other.decoder_start_id == 5


@pytest.mark.parametrize(
    ("kind", "metric", "expected"),
    [
        ("translation", "bleu", {"bleu": 100.0}),
        ("summarization", "rougeL", {"rouge1": 75.0, "rouge2": 50.0, "rougeL": 75.0}),
        ("qa", "f1", {"exact_match": 50.0, "f1": 75.0}),
    ],
)
def test_metrics_follow_the_kind(tiny_pretrained, kind, metric, expected) -> None:  # noqa: ANN001
    if kind == "qa":
        pytest.importorskip("lmforge.evaluation.squad")
    task, model = _task(tiny_pretrained, "t5-tiny", kind=kind)
    examples = [
        Seq2SeqExample("s1", ["green red blue car", "anything"], id="q1"),
        Seq2SeqExample("s2", ["black cat"], id="q2"),
    ]
    # The first prediction is exactly a reference; half of the second one's words are right
    # (ROUGE-1 and SQuAD F1 1/2, bigram F 0), except for BLEU, where no word may be wrong for a
    # hand-checkable 100 (no brevity penalty, every n-gram precision 1).
    second = "black cat" if kind == "translation" else "black dog"
    predictions = ["green red blue car", second]
    task.generate = lambda model, examples, batch_size: predictions
    metrics, rows = task.evaluate(model, examples, batch_size=2)
    assert task.metric == metric
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)
    assert metrics["loss"] > 0
    assert rows[1] == {"id": "q2", "source": "s2", "prediction": second,
                       "references": ["black cat"]}  # fmt: skip


def test_split_validation_keeps_articles_whole() -> None:
    examples = [Seq2SeqExample(str(i), ["x"], group=g) for i, g in enumerate("aaabbbbcc")]
    task = Seq2SeqTask.__new__(Seq2SeqTask)  # splitting needs no model or tokenizer
    train, validation = task.split_validation(examples, fraction=0.6)  # 1.8 of 3 articles
    assert [e.group for e in train] == list("aaa")
    assert [e.group for e in validation] == list("bbbbcc")


def _overfit(task: Seq2SeqTask, model: torch.nn.Module, steps: int) -> float:
    batch = task.collate(task.features(EXAMPLES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.mark.parametrize("preset", ["t5-tiny", "bart-tiny"])
def test_overfit_pairs_are_reproduced_by_beam_search(tiny_pretrained, preset) -> None:  # noqa: ANN001
    task, model = _task(tiny_pretrained, preset, num_beams=3, max_target_length=16)
    before, _ = task.evaluate(model, EXAMPLES, batch_size=4)
    final_loss = _overfit(task, model, steps=60)
    metrics, rows = task.evaluate(model, EXAMPLES, batch_size=4)
    assert final_loss < 0.1
    assert before["bleu"] < 10 < 90 < metrics["bleu"]
    assert sum(row["prediction"] == row["references"][0] for row in rows) >= 7
    greedy = dataclasses.replace(task.options, num_beams=1)
    task.options = greedy
    inputs = [Seq2SeqExample(source, []) for source, _ in PAIRS[:2]]
    assert task.predict(model, inputs, batch_size=2) == [
        {"source": s, "prediction": t} for s, t in PAIRS[:2]
    ]


def _multi30k_slice(tmp_path: Path, split: str, count: int) -> Path:
    for lang in ("en", "de"):
        lines = shared_file(f"multi30k/train.{lang}").read_text(encoding="utf-8").split("\n")
        start = 0 if split == "train" else 1000
        (tmp_path / f"{split}.{lang}").write_text("\n".join(lines[start : start + count]) + "\n")
    return tmp_path / split


def test_finetune_seq2seq_and_predict_end_to_end(tiny_pretrained, tmp_path: Path) -> None:  # noqa: ANN001
    train, dev = _multi30k_slice(tmp_path, "train", 32), _multi30k_slice(tmp_path, "dev", 8)
    run = tmp_path / "run"
    code = main(["finetune", "seq2seq", str(tiny_pretrained("t5-tiny")), f"--run.dir={run}",
                 f"--data.train={train}", f"--data.validation={dev}", "--train.epochs=1",
                 "--task.source_lang=en", "--task.target_lang=de", "--task.num_beams=2",
                 "--task.max_source_length=32", "--task.max_target_length=8",
                 "--train.batch_size=8", *FAST])  # fmt: skip
    assert code == 0
    results = json.loads((run / "metrics.json").read_text())
    assert set(results["validation"]) == {"bleu", "loss"}
    assert 0 <= results["validation"]["bleu"] <= 100
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"source", "prediction", "references"}
    inputs = tmp_path / "new.txt"
    inputs.write_text("A man rides a bike.\nTwo dogs play.\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(row) for row in predicted] == [{"source", "prediction"}] * 2
    assert predicted[1]["source"] == "Two dogs play."
