"""SQuAD v1.1 exact match and F1, as defined by the official evaluate-v1.1.py.

Reference: Rajpurkar et al. 2016, the script `evaluate-v1.1.py` of the SQuAD explorer. Answers are
compared after `normalize_answer` (lower case, no punctuation, no articles a/an/the, single
spaces); F1 is the overlap of the normalized tokens as bags; each question scores its best
reference; a question without a prediction scores 0, as in the official script.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

from lmforge.errors import LmforgeError

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Harmonic mean of token precision and recall of the normalized answers, in [0, 1]."""
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def metric_max_over_ground_truths(
    metric: Callable[[str, str], float], prediction: str, ground_truths: list[str]
) -> float:
    return max(metric(prediction, truth) for truth in ground_truths)


def squad_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in points (0-100) over the questions of `references` (id -> the
    reference answers); `predictions` maps id -> predicted answer text."""
    exact_match = f1 = 0.0
    for question_id, truths in references.items():
        if not truths:
            raise LmforgeError(
                f"question {question_id} has no reference answers; SQuAD scores need at least one"
            )
        if question_id not in predictions:
            continue  # counted as wrong, like the official script's "Unanswered question"
        prediction = predictions[question_id]
        exact_match += metric_max_over_ground_truths(exact_match_score, prediction, truths)
        f1 += metric_max_over_ground_truths(f1_score, prediction, truths)
    total = max(len(references), 1)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
