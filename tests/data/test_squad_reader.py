"""SQuAD v1.1 reading: the real dev set, answer-offset checks, malformed files, article splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.data.squad import QAExample, read_squad, split_by_article
from lmforge.errors import LmforgeError
from tests.conftest import shared_file

DEV = "squad_v1.1/dev-v1.1.json"


@pytest.fixture(scope="module")
def dev() -> list[QAExample]:
    return read_squad(shared_file(DEV))


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _one_article(context: str, answer: str, start: int) -> dict:
    qa = {"id": "q1", "question": "Who?", "answers": [{"text": answer, "answer_start": start}]}
    paragraph = {"context": context, "qas": [qa]}
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [paragraph]}]}


def test_reads_every_question_of_the_dev_set(dev: list[QAExample]) -> None:
    assert len(dev) == 10_570
    assert len({e.id for e in dev}) == 10_570
    titles = list(dict.fromkeys(e.title for e in dev))
    assert len(titles) == 48
    first = dev[0]
    assert first.question == "When did the 1973 oil crisis begin?"
    assert first.answers[:2] == ["October 1973", "October 1973"]
    for example in dev:
        assert example.answers and len(example.answers) == len(example.answer_starts)
        for text, start in zip(example.answers, example.answer_starts, strict=True):
            assert example.context[start : start + len(text)] == text


def test_split_by_article_keeps_articles_whole(dev: list[QAExample]) -> None:
    train, validation = split_by_article(dev, 0.1)
    titles = list(dict.fromkeys(e.title for e in dev))
    assert list(dict.fromkeys(e.title for e in validation)) == titles[-5:]  # round(4.8) = 5
    assert not {e.title for e in train} & {e.title for e in validation}
    assert train + validation == dev
    assert split_by_article(dev, 0.1) == (train, validation)


def test_split_takes_at_least_one_article_and_leaves_one(dev: list[QAExample]) -> None:
    _, validation = split_by_article(dev, 0.001)
    assert {e.title for e in validation} == {dev[-1].title}
    one_article = [e for e in dev if e.title == dev[0].title]
    with pytest.raises(LmforgeError, match="leaves no training article"):
        split_by_article(one_article, 0.5)


def test_answer_at_a_wrong_offset_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "doctored.json", _one_article("Ann met Bob. Bob left.", "Bob", 9))
    with pytest.raises(LmforgeError) as error:
        read_squad(path)
    message = str(error.value)
    assert "answer 'Bob' of question q1 is not at answer_start 9" in message
    assert "doctored.json" in message and "fix answer_start" in message
    assert "\n" not in message


def test_answer_missing_from_its_context_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.json", _one_article("Ann met Bob.", "Carl", 0))
    with pytest.raises(LmforgeError, match="'Carl' of question q1 does not occur in its context"):
        read_squad(path)


def test_doctored_dev_answer_is_refused(tmp_path: Path) -> None:
    data = json.loads(shared_file(DEV).read_text(encoding="utf-8"))
    answer = data["data"][3]["paragraphs"][2]["qas"][1]["answers"][0]
    answer["answer_start"] += 1
    with pytest.raises(LmforgeError, match=r"is not at answer_start \d+ of its context"):
        read_squad(_write(tmp_path / "dev.json", data))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"data": [', "is not valid JSON"),
        ('{"version": "1.1"}', "the top level has no list 'data'"),
        ('{"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}', "has no str 'context'"),
        ('{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]}',
         "question x has no str 'question'"),
    ],
)  # fmt: skip
def test_malformed_files_give_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LmforgeError, match=expected) as error:
        read_squad(path)
    assert "\n" not in str(error.value)


def test_inputs_without_answers_are_read(tmp_path: Path) -> None:
    data = _one_article("Ann met Bob.", "Bob", 8)
    del data["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    assert read_squad(_write(tmp_path / "in.json", data))[0].answers == []
    lines = [{"context": "Ann met Bob.", "question": "Who?"}, {"context": "x", "question": "y",
             "id": "b", "answers": [{"text": "x", "answer_start": 0}]}]  # fmt: skip
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    examples = read_squad(path)
    assert [(e.id, e.question, e.answers) for e in examples] == [("1", "Who?", []),
                                                                  ("b", "y", ["x"])]  # fmt: skip


def test_jsonl_line_without_a_question_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"context": "Ann met Bob."}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match="question 1 has no str 'question'; expected one"):
        read_squad(path)
