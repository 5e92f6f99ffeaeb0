"""Accuracy and macro-averaged F1 of label predictions, in points (0-100).

Macro-F1 is the unweighted mean of the per-class F1 over every class that occurs in the references
or the predictions, as scikit-learn's `f1_score(average="macro")` computes it (a class with no
true positive, predicted or not, scores 0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    if not references:
        return 0.0
    correct = sum(p == r for p, r in zip(predictions, references, strict=True))
    return 100.0 * correct / len(references)


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    classes = sorted(set(predictions) | set(references))
    if not classes:
        return 0.0
    true_positives = Counter(r for p, r in zip(predictions, references, strict=True) if p == r)
    predicted, actual = Counter(predictions), Counter(references)
    scores = []
    for label in classes:
        # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + actual): defined (0) when TP = 0.
        scores.append(2 * true_positives[label] / (predicted[label] + actual[label]))
    return 100.0 * sum(scores) / len(scores)
