"""Entity-level precision, recall and F1, as the CoNLL shared tasks score named entities.

A predicted entity counts only if its type, first and last token all equal a gold entity's: a
wrong boundary is both a false positive and a false negative. Entities are read from tags with
conlleval's start-of-chunk / end-of-chunk rules (conlleval.pl, Tjong Kim Sang 2000; the same rules
as `seqeval`'s default mode, Nakayama 2018), which accept IOB1, BIO2 and IOBES alike: an I- after O
or after another type starts an entity, a B- always does. Scores are micro-averaged over entities
(overall) and also given per type; all in points (0-100).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Entity = tuple[str, int, int]
"""(type, first token, one past the last token)."""


def _split(tag: str) -> tuple[str, str]:
    # conlleval: the prefix is the first character, the type what follows the first "-".
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def _ends_chunk(previous: str, tag: str, previous_kind: str, kind: str) -> bool:
    """Whether the entity holding the previous token ends before this token (conlleval)."""
    if previous in ("E", "S"):
        return True
    if previous in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return previous != "O" and previous_kind != kind


def _starts_chunk(previous: str, tag: str, previous_kind: str, kind: str) -> bool:
    """Whether this token starts a new entity (conlleval)."""
    if tag in ("B", "S"):
        return True
    if previous in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and previous_kind != kind


def extract_entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence's tags, in order: (type, start, end), end exclusive."""
    entities: list[Entity] = []
    previous, previous_kind, start = "O", "", 0
    # A final "O" closes an entity that runs to the end of the sentence.
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = _split(tag)
        if _ends_chunk(previous, prefix, previous_kind, kind):
            entities.append((previous_kind, start, i))
        if _starts_chunk(previous, prefix, previous_kind, kind):
            start = i
        previous, previous_kind = prefix, kind
    return entities


@dataclass(frozen=True)
class EntityCounts:
    num_gold: int = 0
    num_predicted: int = 0
    num_correct: int = 0

    @property
    def precision(self) -> float:
        return 100.0 * self.num_correct / self.num_predicted if self.num_predicted else 0.0

    @property
    def recall(self) -> float:
        return 100.0 * self.num_correct / self.num_gold if self.num_gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def count_entities(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, EntityCounts]:
    """Per entity type, the gold, predicted and correctly predicted entities of all sentences."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    num_gold: Counter[str] = Counter()
    num_predicted: Counter[str] = Counter()
    num_correct: Counter[str] = Counter()
    for i, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {i}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted"
            )
        gold_entities = extract_entities(gold_tags)
        predicted_entities = extract_entities(predicted_tags)
        num_gold.update(kind for kind, _, _ in gold_entities)
        num_predicted.update(kind for kind, _, _ in predicted_entities)
        num_correct.update(kind for kind, _, _ in set(gold_entities) & set(predicted_entities))
    kinds = sorted(set(num_gold) | set(num_predicted))
    return {k: EntityCounts(num_gold[k], num_predicted[k], num_correct[k]) for k in kinds}


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, float]:
    """precision, recall, f1 (micro-averaged over all entities), their per-type values as
    `f1_PER` etc., and `accuracy`, the fraction of tags that are right; all in points."""
    per_type = count_entities(gold, predicted)
    overall = EntityCounts(
        sum(c.num_gold for c in per_type.values()),
        sum(c.num_predicted for c in per_type.values()),
        sum(c.num_correct for c in per_type.values()),
    )
    num_tags = sum(len(tags) for tags in gold)
    num_right = sum(
        g == p for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)
    )
    scores = {
        "precision": overall.precision,
        "recall": overall.recall,
        "f1": overall.f1,
        "accuracy": 100.0 * num_right / num_tags if num_tags else 0.0,
    }
    for kind, counts in per_type.items():
        scores[f"precision_{kind}"] = counts.precision
        scores[f"recall_{kind}"] = counts.recall
        scores[f"f1_{kind}"] = counts.f1
    return scores
