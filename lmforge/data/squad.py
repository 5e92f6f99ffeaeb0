"""Reading SQuAD v1.1 files into question-answering examples, and splitting them by article.

The format is the official one (Rajpurkar et al. 2016, https://rajpurkar.github.io/SQuAD-explorer/):

    {"version": "1.1", "data": [{"title": ..., "paragraphs": [{"context": ...,
        "qas": [{"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": N}]}]}]}]}

Span-labelling code trusts `answer_start`, so every answer is checked against its context when
read: a wrong offset would silently train the model on the wrong characters. Inputs for prediction
may leave the answers out. A `.jsonl` file (one question per line: "context", "question", optional
"id", "title" and "answers" as a list of {"text", "answer_start"}) is read the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.records import jsonl_records, split_by_group
from lmforge.errors import LmforgeError

_LAYOUT = (
    'expected {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", '
    '"answers": [{"text", "answer_start"}]}]}]}]}'
)
_JSONL_LAYOUT = (
    'expected one question per line: {"context", "question", optional "id", "title" and '
    '"answers": [{"text", "answer_start"}]}'
)


@dataclass(frozen=True)
class QAExample:
    """One question about one context; `answers` are the reference texts (empty for inputs to
    predict), `answer_starts` their character offsets in `context`."""

    id: str
    title: str
    context: str
    question: str
    answers: list[str]
    answer_starts: list[int]


def read_squad(path: str | Path) -> list[QAExample]:
    """The questions of a SQuAD v1.1 JSON file (or a .jsonl of questions), in file order."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".jsonl":
        return _read_jsonl(text, path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LmforgeError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}); "
            "give a SQuAD v1.1 .json file or a .jsonl with one question per line"
        ) from None
    articles = _field(data, "data", list, path, "the top level")
    examples = []
    for article in articles:
        title = str(_field(article, "title", str, path, "an article"))
        for paragraph in _field(article, "paragraphs", list, path, f"article {title!r}"):
            context = _field(paragraph, "context", str, path, f"a paragraph of {title!r}")
            for qa in _field(paragraph, "qas", list, path, f"a paragraph of {title!r}"):
                examples.append(_example(qa, title, context, path))
    return examples


def _field(obj: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """obj[key], checked to be a `kind`; a one-line error naming the place otherwise."""
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        problem = f"{where} has no {kind.__name__} {key!r}"
        if path.suffix == ".jsonl":
            raise LmforgeError(f"{path}: {problem}; {_JSONL_LAYOUT}")
        raise LmforgeError(f"{path} is not SQuAD v1.1 JSON: {problem}; {_LAYOUT}")
    return obj[key]


def _example(qa: Any, title: str, context: str, path: Path) -> QAExample:
    """A checked QAExample from one `qas` entry (a dict with id, question, optional answers)."""
    if isinstance(qa, dict) and isinstance(qa.get("id"), int):
        qa = {**qa, "id": str(qa["id"])}  # jsonl files often number their questions
    question_id = _field(qa, "id", str, path, f"a question of {title!r}")
    question = _field(qa, "question", str, path, f"question {question_id}")
    answers, starts = [], []
    for answer in qa.get("answers") or []:
        text = _field(answer, "text", str, path, f"an answer of question {question_id}")
        start = _field(answer, "answer_start", int, path, f"an answer of question {question_id}")
        _check_answer(text, start, context, question_id, path)
        answers.append(text)
        starts.append(start)
    return QAExample(question_id, title, context, question, answers, starts)


def _check_answer(text: str, start: int, context: str, question_id: str, path: Path) -> None:
    if context[start : start + len(text)] == text:
        return
    if text in context:
        raise LmforgeError(
            f"{path}: answer {text!r} of question {question_id} is not at answer_start {start} "
            f"of its context (it is at {context.find(text)}); fix answer_start"
        )
    raise LmforgeError(
        f"{path}: answer {text!r} of question {question_id} does not occur in its context; "
        "extractive QA answers must be exact substrings of the context"
    )


def _read_jsonl(text: str, path: Path) -> list[QAExample]:
    examples = []
    for number, row in jsonl_records(text, path):
        context = _field(row, "context", str, path, f"line {number}")
        if "id" not in row:
            row = {**row, "id": str(number)}
        examples.append(_example(row, str(row.get("title", "")), context, path))
    return examples


def split_by_article(
    examples: list[QAExample], fraction: float
) -> tuple[list[QAExample], list[QAExample]]:
    """(train, validation): the last round(fraction * articles) articles, at least one, go to
    validation whole, so no paragraph is seen in both. Articles are runs of equal titles in file
    order; the split is deterministic."""
    return split_by_group(examples, fraction, [e.title for e in examples], "article")
