"""Entity-level precision/recall/F1 (conlleval rules) on hand-computed cases, and against the
`seqeval` package where it is installed."""

from __future__ import annotations

import random

import pytest

from lmforge.evaluation.seqeval import count_entities, entity_scores, extract_entities


def test_extracts_entities_of_bio2_iob1_and_iobes() -> None:
    assert extract_entities("B-PER I-PER O B-LOC".split()) == [("PER", 0, 2), ("LOC", 3, 4)]
    # IOB1: I- starts an entity after O / at the start; B- only splits two adjacent ones.
    assert extract_entities("I-PER I-PER B-PER O I-LOC".split()) == [
        ("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5),
    ]  # fmt: skip
    assert extract_entities("B-PER E-PER S-LOC O".split()) == [("PER", 0, 2), ("LOC", 2, 3)]


def test_type_change_inside_i_tags_splits_entities() -> None:
    assert extract_entities("B-PER I-LOC I-LOC".split()) == [("PER", 0, 1), ("LOC", 1, 3)]


def test_entity_at_sentence_end_is_closed_and_sentences_never_merge() -> None:
    assert extract_entities("O B-LOC I-LOC".split()) == [("LOC", 1, 3)]
    gold = [["O", "I-LOC"], ["I-LOC", "O"]]
    counts = count_entities(gold, gold)
    assert counts["LOC"].num_gold == 2 and counts["LOC"].num_correct == 2


def test_perfect_prediction_scores_100() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    scores = entity_scores(gold, gold)
    assert scores["precision"] == scores["recall"] == scores["f1"] == scores["accuracy"] == 100


def test_wrong_boundary_is_a_false_positive_and_a_false_negative() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "O", "O", "B-LOC"]]  # PER one token short
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == 50 and scores["recall"] == 50 and scores["f1"] == 50
    assert scores["f1_PER"] == 0 and scores["f1_LOC"] == 100
    assert scores["accuracy"] == 75


def test_type_mismatch_counts_against_both_types() -> None:
    scores = entity_scores([["B-ORG", "O"]], [["B-LOC", "O"]])
    assert scores["f1"] == 0
    assert scores["recall_ORG"] == 0 and scores["precision_ORG"] == 0
    assert scores["precision_LOC"] == 0 and scores["recall_LOC"] == 0


def test_micro_average_over_entities() -> None:
    # gold: PER(0,2) LOC(3,4) | ORG(0,1) MISC(2,3); predicted: PER(0,2) LOC(3,4) | LOC(0,1).
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC"]]
    predicted = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O", "O"]]
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(200 / 3)
    assert scores["recall"] == pytest.approx(50)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5) * 100)
    assert scores["precision_LOC"] == 50 and scores["recall_LOC"] == 100
    assert scores["accuracy"] == pytest.approx(100 * 5 / 7)


def test_iob1_gold_against_bio2_prediction() -> None:
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    predicted = [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    assert entity_scores(gold, predicted)["f1"] == 100


def test_i_after_o_starts_an_entity_as_in_conlleval() -> None:
    assert entity_scores([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])["f1"] == 100


def test_no_predictions_scores_zero_without_dividing_by_zero() -> None:
    scores = entity_scores([["B-PER", "O"]], [["O", "O"]])
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0
    assert entity_scores([["O"]], [["O"]])["f1"] == 0


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2 predicted"):
        entity_scores([["O"]], [["O"], ["O"]])


def _random_tags(rng: random.Random, length: int) -> list[str]:
    # Any mix of prefixes and types, invalid sequences included (I- after O, type switches).
    return [
        rng.choice(["O", "O", "O", "B-A", "I-A", "B-B", "I-B", "E-A", "S-B"]) for _ in range(length)
    ]


def test_matches_the_seqeval_package() -> None:
    metrics = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    gold = [_random_tags(rng, rng.randint(1, 12)) for _ in range(200)]
    predicted = [_random_tags(rng, len(tags)) for tags in gold]
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(100 * metrics.precision_score(gold, predicted))
    assert scores["recall"] == pytest.approx(100 * metrics.recall_score(gold, predicted))
    assert scores["f1"] == pytest.approx(100 * metrics.f1_score(gold, predicted))
