"""Extractive QA: question/context windows, answer labels through character offsets, span
decoding, and a tiny model that learns eight SQuAD questions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.config.finetune import QAOptions
from lmforge.data.squad import QAExample, read_squad
from lmforge.errors import LmforgeError
from lmforge.models.lm import LanguageModel
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.qa import ExtractiveQATask, QAWindow, decode_answer
from tests.conftest import shared_file

DEV = "squad_v1.1/dev-v1.1.json"
Pretrained = Callable[[str], Path]
SMALL = {"max_length": 64, "max_question_length": 24, "stride": 16}
"""Short windows, so that most dev contexts need several."""


@pytest.fixture(scope="module")
def dev() -> list[QAExample]:
    return read_squad(shared_file(DEV))


def _task(
    tiny_pretrained: Pretrained, preset: str, **options: int
) -> tuple[ExtractiveQATask, LanguageModel]:
    backbone, tokenizer, _ = load_pretrained(tiny_pretrained(preset))
    return ExtractiveQATask(QAOptions(**options), tokenizer, backbone.config), backbone


def _context_tokens(task: ExtractiveQATask, context: str) -> list[tuple[int, int]]:
    """Character spans of the non-blank tokens of a whole context, without their spaces."""
    spans = []
    for begin, end in task.tokenizer.inner.encode(context, add_special_tokens=False).offsets:
        text = context[begin:end]
        if text.strip():
            spans.append(
                (begin + len(text) - len(text.lstrip()), end - len(text) + len(text.rstrip()))
            )
    return spans


@pytest.mark.parametrize("preset", ["bert-tiny", "roberta-tiny"])
def test_answer_labels_map_back_to_the_answer_text(
    tiny_pretrained: Pretrained, dev: list[QAExample], preset: str
) -> None:
    task, _ = _task(tiny_pretrained, preset, **SMALL)
    examples = dev[:300]
    windows = task.features(examples)
    labelled, aligned = set(), 0
    for w in windows:
        if w.start_position == 0:
            assert w.end_position == 0
            continue
        example = examples[w.example_index]
        labelled.add(w.example_index)
        first, last = w.start_position - w.context_start, w.end_position - w.context_start
        assert 0 <= first <= last < len(w.offsets)
        begin, end = w.offsets[first][0], w.offsets[last][1]
        answer_begin = example.answer_starts[0]
        answer_end = answer_begin + len(example.answers[0])
        if any(s == answer_begin for s, _ in w.offsets) and any(
            e == answer_end for _, e in w.offsets
        ):
            assert example.context[begin:end] == example.answers[0]
            aligned += 1
        else:  # the answer starts or ends inside a token: the smallest span of tokens holding it
            assert begin <= answer_begin < w.offsets[first][1]
            assert w.offsets[last][0] < answer_end <= end
    assert aligned > 0.9 * len(labelled)
    for index, example in enumerate(examples):
        begin = example.answer_starts[0]
        span = (begin, begin + len(example.answers[0]))
        overlapping = [
            o for o in _context_tokens(task, example.context) if o[0] < span[1] and o[1] > span[0]
        ]
        if len(overlapping) <= SMALL["stride"]:  # then some window holds it whole
            assert index in labelled


@pytest.mark.parametrize("preset", ["bert-tiny", "roberta-tiny"])
def test_long_context_gives_windows_sharing_stride_tokens(
    tiny_pretrained: Pretrained, dev: list[QAExample], preset: str
) -> None:
    task, _ = _task(tiny_pretrained, preset, **SMALL)
    example = max(dev[:300], key=lambda e: len(e.context))
    windows = task.features([example])
    assert len(windows) >= 3
    stride = SMALL["stride"]
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.offsets[-stride:] == b.offsets[:stride]
        assert (
            a.input_ids[-1 - stride : -1] == b.input_ids[b.context_start : b.context_start + stride]
        )
    covered = windows[0].offsets + [o for w in windows[1:] for o in w.offsets[stride:]]
    assert [o for o in covered if o[0] < o[1]] == _context_tokens(task, example.context)
    tok = task.tokenizer
    for w in windows:
        assert len(w.input_ids) <= SMALL["max_length"]
        question = w.input_ids[1 : w.context_start - (1 if preset == "bert-tiny" else 2)]
        assert question == tok.encode(example.question)[: SMALL["max_question_length"]]
        if preset == "bert-tiny":  # [CLS] question [SEP] context [SEP], segments 0 then 1
            assert w.input_ids[0] == tok.cls_id and w.input_ids[-1] == tok.sep_id
            assert w.input_ids[w.context_start - 1] == tok.sep_id
            assert w.segment_ids == [0] * w.context_start + [1] * (
                len(w.input_ids) - w.context_start
            )
        else:  # <s> question </s></s> context </s>, one segment type
            assert w.input_ids[0] == tok.bos_id and w.input_ids[-1] == tok.eos_id
            assert w.input_ids[w.context_start - 2 : w.context_start] == [tok.eos_id] * 2
            assert w.segment_ids is None


def _position(window: QAWindow, char: int, side: int) -> int:
    """Position of the context token starting (side 0) or ending (side 1) at `char`."""
    return window.context_start + next(i for i, o in enumerate(window.offsets) if o[side] == char)


def test_decoding_returns_the_original_characters(tiny_pretrained: Pretrained) -> None:
    task, _ = _task(tiny_pretrained, "bert-tiny", **SMALL)
    context = "In 1998,  the CAFÉ  Müller opened; it closed in 2004."
    (window,) = task.features([QAExample("x", "T", context, "When did it open?", [], [])])
    scores = torch.full((len(window.input_ids), 2), -10.0)
    scores[: window.context_start] = 50.0  # [CLS] and the question never start or end an answer
    start = _position(window, context.index("CAFÉ"), 0)
    end = _position(window, context.index("opened") - 1, 1)
    scores[start, 0] = scores[end, 1] = 5.0
    scores[_position(window, 7, 1), 1] = 8.0  # "1998" ends well but before the start
    scores[_position(window, context.index("2004"), 0), 0] = 2.0
    scores[_position(window, len(context) - 1, 1), 1] = 2.0
    # The uncased tokenizer would decode "cafe muller"; the offsets give the text as written.
    assert decode_answer(context, [(window, scores)], 20, 30) == "CAFÉ  Müller"
    # One token shorter: the span no longer fits, and the next best is "2004".
    assert decode_answer(context, [(window, scores)], 20, end - start) == "2004"


def test_decoding_takes_the_best_span_of_all_windows(
    tiny_pretrained: Pretrained, dev: list[QAExample]
) -> None:
    task, _ = _task(tiny_pretrained, "bert-tiny", **SMALL)
    example = max(dev[:300], key=lambda e: len(e.context))
    first, _, third = task.features([example])[:3]
    pairs = []
    for window, score in ((first, 3.0), (third, 4.0)):
        scores = torch.zeros(len(window.input_ids), 2)
        scores[window.context_start, 0] = scores[window.context_start + 2, 1] = score
        pairs.append((window, scores))
    best = third.offsets
    assert decode_answer(example.context, pairs, 20, 30) == example.context[best[0][0] : best[2][1]]


def test_tiny_model_learns_eight_questions(
    tiny_pretrained: Pretrained, dev: list[QAExample]
) -> None:
    task, backbone = _task(tiny_pretrained, "bert-tiny", **SMALL)
    by_context = {e.context: e for e in sorted(dev, key=lambda e: len(e.context), reverse=True)}
    examples = list(by_context.values())[-8:]  # the 8 shortest contexts, one question each
    model = task.build_model(backbone).train()
    batch = task.collate(task.features(examples))
    assert len(batch["input_ids"]) > len(examples)  # several windows per question
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    metrics, rows = task.evaluate(model.eval(), examples, batch_size=16)
    assert metrics["exact_match"] >= 75.0 and metrics["f1"] >= metrics["exact_match"]
    assert [set(row) for row in rows] == [{"id", "question", "prediction", "answers"}] * 8
    assert all(row["prediction"] in e.context for row, e in zip(rows, examples, strict=True))


def test_predict_reads_jsonl_without_answers(tiny_pretrained: Pretrained, tmp_path: Path) -> None:
    task, backbone = _task(tiny_pretrained, "roberta-tiny", **SMALL)
    path = tmp_path / "questions.jsonl"
    lines = [{"context": "Ann met Bob in Paris.", "question": "Where?"},
             {"id": "q7", "context": "Bob left.", "question": "Who left?"}]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    examples = task.read_inputs(str(path))
    rows = task.predict(task.build_model(backbone).eval(), examples, batch_size=4)
    assert [row["id"] for row in rows] == ["1", "q7"]
    assert all(set(row) == {"id", "question", "prediction"} for row in rows)
    assert all(row["prediction"] in line["context"] for row, line in zip(rows, lines, strict=True))
    with pytest.raises(LmforgeError, match="question 1 has no answers"):
        task.read(str(path))


def test_windows_must_fit_the_model(tiny_pretrained: Pretrained) -> None:
    # bert-tiny has 256 positions: 256 - 64 - 3 special tokens leaves less than the stride.
    with pytest.raises(LmforgeError, match="task.stride=200 leaves no room in 256-token windows"):
        _task(tiny_pretrained, "bert-tiny", max_length=384, stride=200, max_question_length=64)


def _squad_slice(path: Path, articles: int, questions: int) -> Path:
    """The first paragraph of the first `articles` dev articles, with `questions` questions each."""
    data = json.loads(shared_file(DEV).read_text(encoding="utf-8"))
    kept = []
    for article in data["data"][:articles]:
        paragraph = article["paragraphs"][0]
        paragraph = {"context": paragraph["context"], "qas": paragraph["qas"][:questions]}
        kept.append({"title": article["title"], "paragraphs": [paragraph]})
    path.write_text(json.dumps({"version": "1.1", "data": kept}), encoding="utf-8")
    return path


def test_finetune_qa_and_predict_end_to_end(tiny_pretrained: Pretrained, tmp_path: Path) -> None:
    train = _squad_slice(tmp_path / "squad.json", articles=6, questions=5)
    run = tmp_path / "run"
    code = main(["finetune", "qa", str(tiny_pretrained("bert-tiny")), f"--run.dir={run}",
                 f"--data.train={train}", "--data.validation_split=0.34", "--train.epochs=1",
                 "--train.batch_size=8", "--task.max_length=128", "--task.stride=32",
                 "--task.max_question_length=32", "--log.progress=false",
                 "--log.tensorboard=false"])  # fmt: skip
    assert code == 0
    results = json.loads((run / "metrics.json").read_text())
    assert set(results["validation"]) == {"exact_match", "f1"}
    assert 0 <= results["validation"]["exact_match"] <= results["validation"]["f1"] <= 100
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    validation = read_squad(train)[-10:]  # round(0.34 * 6) = the last 2 articles, 5 questions each
    assert [row["id"] for row in rows] == [e.id for e in validation]
    assert all(set(row) == {"id", "question", "prediction", "answers"} for row in rows)
    assert all(row["prediction"] in e.context for row, e in zip(rows, validation, strict=True))
    inputs = tmp_path / "questions.jsonl"
    inputs.write_text(json.dumps({"context": "Ann met Bob.", "question": "Who?"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["id"] == "1" and row["question"] == "Who?" and row["prediction"] in "Ann met Bob."
