"""Metrics of generated text: corpus BLEU (sacrebleu) and ROUGE-1/2/L (Google's rouge-score).

Both are the reference implementations, imported only when called (the `eval` extra), so that
scores are comparable with published ones: sacrebleu's corpus BLEU with its default 13a
tokenization (Post 2018), and ROUGE F-measures with the Porter stemmer, the settings of the
summarization literature (Lin 2004; See et al. 2017). Scores are points, 0-100.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lmforge.errors import LmforgeError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LmforgeError(
            f"generation metrics need the {module.split('.')[0]} package: "
            "pip install 'lmforge[eval]'"
        ) from None


def _check_lengths(hypotheses: list[str], references: list[list[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every hypothesis needs at least one reference")


def bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU of `hypotheses` against one or more references each (`references[i]` are the
    references of `hypotheses[i]`; their number may vary)."""
    _check_lengths(hypotheses, references)
    sacrebleu = _require("sacrebleu")
    # sacrebleu takes reference *streams*: stream k holds every example's k-th reference, None
    # where an example has fewer (its way of allowing a variable number of references).
    num_streams = max((len(refs) for refs in references), default=1)
    streams = [
        [refs[k] if k < len(refs) else None for refs in references] for k in range(num_streams)
    ]
    return float(sacrebleu.corpus_bleu(hypotheses, streams).score)


def rouge(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures; an example with several references counts
    the best of them (per ROUGE type, rouge-score's `score_multi`)."""
    _check_lengths(hypotheses, references)
    rouge_scorer = _require("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        scores = scorer.score_multi(refs, hypothesis)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    count = max(len(hypotheses), 1)
    return {kind: 100.0 * total / count for kind, total in totals.items()}
