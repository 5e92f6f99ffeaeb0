"""BLEU and ROUGE: the reference libraries' numbers, in points, with several references."""

from __future__ import annotations

import sys

import pytest

from lmforge.errors import LmforgeError
from lmforge.evaluation.generation import bleu, rouge

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

HYPOTHESES = ["the cat sat on the mat", "a dog runs in the park", "it is raining today"]
REFERENCES = ["the cat sat on a mat", "the dog is running in a park", "today it rains"]


def test_bleu_equals_sacrebleu_corpus_bleu() -> None:
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert bleu(HYPOTHESES, [[r] for r in REFERENCES]) == pytest.approx(expected)


def test_bleu_by_hand() -> None:
    # Against "the cat sat on a mat": 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths
    # (no brevity penalty): BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** (1/4).
    assert bleu([HYPOTHESES[0]], [[REFERENCES[0]]]) == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_of_a_perfect_match_is_100() -> None:
    assert bleu(REFERENCES, [[r] for r in REFERENCES]) == pytest.approx(100)


def test_bleu_takes_a_variable_number_of_references() -> None:
    references = [[REFERENCES[0], HYPOTHESES[0]], [REFERENCES[1]], [REFERENCES[2], "x"]]
    streams = [
        [REFERENCES[0], REFERENCES[1], REFERENCES[2]],
        [HYPOTHESES[0], None, "x"],
    ]
    expected = sacrebleu.corpus_bleu(HYPOTHESES, streams).score
    assert bleu(HYPOTHESES, references) == pytest.approx(expected)
    assert expected > bleu(HYPOTHESES, [[r] for r in REFERENCES])  # the exact match counts


def test_rouge_equals_rouge_score_means() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h) for h, r in zip(HYPOTHESES, REFERENCES, strict=True)]
    result = rouge(HYPOTHESES, [[r] for r in REFERENCES])
    for kind in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(s[kind].fmeasure for s in scores) / len(scores)
        assert result[kind] == pytest.approx(expected)


def test_rouge_by_hand() -> None:
    # "the cat sat" vs "the cat ran": 2 of 3 words (F 2/3), 1 of 2 bigrams (F 1/2), LCS 2 words.
    result = rouge(["the cat sat"], [["the cat ran"]])
    assert result == pytest.approx({"rouge1": 200 / 3, "rouge2": 50.0, "rougeL": 200 / 3})


def test_rouge_counts_the_best_reference() -> None:
    result = rouge(["the cat sat"], [["completely different words", "the cat sat"]])
    assert result == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})


def test_rouge_stems_words() -> None:
    assert rouge(["the cats running"], [["the cat runs"]])["rouge1"] == pytest.approx(100)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # makes `import sacrebleu` fail
    with pytest.raises(LmforgeError, match=r"pip install 'lmforge\[eval\]'"):
        bleu(["a"], [["a"]])


def test_every_hypothesis_needs_references() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        rouge(["a"], [[]])
