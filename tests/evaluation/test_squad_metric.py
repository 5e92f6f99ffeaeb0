"""SQuAD v1.1 exact match and F1 on hand-computed cases (evaluate-v1.1.py definitions)."""

from __future__ import annotations

import pytest

from lmforge.errors import LmforgeError
from lmforge.evaluation.squad import (
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_scores,
)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Denver Broncos", "denver broncos"),
        ("  an  apple,\ta PEAR. ", "apple pear"),
        ("Theatre and anthem", "theatre and anthem"),  # articles only as whole words
        ("brown-fox's (1990s)", "brownfoxs 1990s"),  # punctuation dropped, not spaced
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_articles_and_punctuation() -> None:
    assert exact_match_score("the Broncos.", "Broncos")
    assert not exact_match_score("Denver Broncos", "Broncos")


def test_f1_is_token_overlap() -> None:
    # prediction {denver, broncos, won}, reference {denver, broncos}: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
    # bags, not sets: 'x y y' and 'y y z' share two y's: P = R = 2/3
    assert f1_score("x y y", "y y z") == pytest.approx(2 / 3)
    assert f1_score("Carolina", "Denver") == 0.0


def test_empty_prediction_scores_zero() -> None:
    assert f1_score("", "Denver") == 0.0
    assert not exact_match_score("", "Denver")
    assert squad_scores({"q": ""}, {"q": ["Denver", "Broncos"]}) == {"exact_match": 0.0, "f1": 0.0}


def test_each_question_scores_its_best_reference() -> None:
    # vs "Denver Broncos": P = 1, R = 1/2, F1 = 2/3; vs "Carolina": 0; vs "the broncos": EM
    scores = squad_scores({"q": "Broncos"}, {"q": ["Denver Broncos", "Carolina"]})
    assert scores == {"exact_match": 0.0, "f1": pytest.approx(200 / 3)}
    scores = squad_scores({"q": "Broncos"}, {"q": ["Denver Broncos", "the broncos"]})
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_scores_average_over_questions_in_points() -> None:
    predictions = {"a": "Santa Clara", "b": "Denver Broncos won"}  # "c" unanswered: counts 0
    references = {"a": ["Santa Clara, California"], "b": ["Denver Broncos"], "c": ["Levi's"]}
    scores = squad_scores(predictions, references)
    # a: P = 1, R = 2/3, F1 = 0.8; b: P = 2/3, R = 1, F1 = 0.8; c: 0
    assert scores["exact_match"] == pytest.approx(0.0)
    assert scores["f1"] == pytest.approx(100 * 1.6 / 3)
    assert squad_scores({"a": "Santa Clara, California."}, {"a": references["a"]}) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }


def test_question_without_references_is_refused() -> None:
    with pytest.raises(LmforgeError, match="question q has no reference answers"):
        squad_scores({"q": "x"}, {"q": []})
