"""`evaluate_minimal_pairs`: zero-shot grammatical knowledge by minimal pairs (what
`lmforge evaluate minimal-pairs` runs). BLiMP (Warstadt et al. 2020, "BLiMP: The Benchmark of
Linguistic Minimal Pairs for English") pairs a grammatical sentence with an ungrammatical one that
differs minimally; a model gets a pair right when it gives the grammatical one the higher
log-likelihood (`lmforge.tasks.scoring.sentence_log_likelihoods`: summed log-probability for
decoders, pseudo-log-likelihood for encoders, decoder-target log-likelihood for encoder-decoders).

Input: a .jsonl file or a folder of them, one pair per line: `sentence_good`, `sentence_bad`, and
optionally `UID` (the paradigm; default the file's name), `field` (morphology, syntax, ...) and
`linguistics_term` (the phenomenon). Accuracy, in points, per paradigm; per field and phenomenon
the mean over their paradigms; overall both the mean over paradigms (what the BLiMP paper reports)
and over pairs. Chance is 50.

    from lmforge.tasks.minimal_pairs import MinimalPairsOptions, evaluate_minimal_pairs
    result = evaluate_minimal_pairs("runs/gpt2", MinimalPairsOptions(data="blimp"))
    result.metrics["accuracy"]
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lmforge.data.tokenizer import Tokenizer
from lmforge.distributed.setup import choose_device
from lmforge.errors import LmforgeError
from lmforge.models.lm import LanguageModel
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.scoring import sentence_log_likelihoods

CHANCE = 50.0
_SENTENCES = ("sentence_good", "sentence_bad")
UNSPECIFIED = "unspecified"
"""The field or phenomenon of pairs whose lines name none."""
_PAIRS_PER_CALL = 500
"""Pairs scored per call: enough sentences to fill length-sorted batches, few enough that the
progress bar moves every few seconds."""


@dataclass(frozen=True)
class MinimalPair:
    good: str
    bad: str
    paradigm: str
    """BLiMP's UID, else the name of the file."""
    field: str = UNSPECIFIED
    phenomenon: str = UNSPECIFIED
    """BLiMP's linguistics_term."""


@dataclass(frozen=True, kw_only=True)
class MinimalPairsOptions:
    """The flags of `lmforge evaluate minimal-pairs` (whose help says more)."""

    data: str
    """A BLiMP-format .jsonl file or a folder of them."""
    batch_size: int = 64
    """Sequences per forward pass (for encoders: masked copies, one per token of a sentence)."""
    max_pairs: int = 0
    """The first this many pairs of each paradigm; 0: all."""
    seed: int = 0
    """Seeds the weights of init="random"."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    init: Literal["pretrained", "random"] = "pretrained"
    """random: the same architecture freshly initialised, the baseline that shows what
    pretraining brings."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise LmforgeError("--batch-size must be at least 1")
        if self.max_pairs < 0:
            raise LmforgeError("--max-pairs must be >= 0 (0: all)")


@dataclass(frozen=True)
class MinimalPairsResult:
    metrics: dict[str, Any]
    """metrics.json: accuracies (points) overall, per field, phenomenon and paradigm, then the
    settings that produced them."""
    rows: list[dict[str, Any]]
    """pairs.jsonl: each pair with both scores and whether it was right."""
    seconds: float
    """Time spent scoring."""
    files: tuple[Path, ...] = ()
    """What was written (nothing without `output`): charts, pairs.jsonl, metrics.json."""


def evaluate_minimal_pairs(
    pretrained: str | Path,
    options: MinimalPairsOptions,
    *,
    output: str | Path | None = None,
    progress: bool = True,
) -> MinimalPairsResult:
    """Score every pair of `options.data` with the model of a run or checkpoint directory; with
    `output`, write a bar chart per field, pairs.jsonl and (last) metrics.json there."""
    pairs = read_minimal_pairs(options.data, max_pairs=options.max_pairs)
    model, tokenizer, _ = load_pretrained(
        pretrained, device=choose_device(options.device), init=options.init, seed=options.seed
    )
    started = time.perf_counter()
    scores = _score_pairs(model, tokenizer, pairs, options.batch_size, progress)
    seconds = time.perf_counter() - started
    correct = [good > bad for good, bad in scores]
    settings = {
        "pretrained": str(pretrained), "init": options.init, "seed": options.seed,
        "family": model.config.family, "data": str(options.data),
        "max_pairs": options.max_pairs, "seconds": round(seconds, 2),
    }  # fmt: skip
    metrics = {**accuracies(pairs, correct), **settings}
    rows = [
        {"paradigm": pair.paradigm, "sentence_good": pair.good, "sentence_bad": pair.bad,
         "score_good": good, "score_bad": bad, "correct": right}
        for pair, (good, bad), right in zip(pairs, scores, correct, strict=True)
    ]  # fmt: skip
    result = MinimalPairsResult(metrics, rows, seconds)
    if output is None:
        return result
    return replace(result, files=_write_outputs(Path(output), result))


# --- reading ------------------------------------------------------------------------------------


def read_minimal_pairs(path: str | Path, *, max_pairs: int = 0) -> list[MinimalPair]:
    """The pairs of a BLiMP-format .jsonl file or of every .jsonl in a folder (in name order);
    with `max_pairs`, the first that many of each paradigm."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise LmforgeError(f"{path} holds no .jsonl file; give BLiMP-format .jsonl files")
    elif path.is_file():
        files = [path]
    else:
        raise LmforgeError(f"{path} does not exist; give a BLiMP .jsonl file or a folder of them")
    pairs: list[MinimalPair] = []
    taken: Counter[str] = Counter()
    for file in files:
        for pair in _read_file(file):
            if not max_pairs or taken[pair.paradigm] < max_pairs:
                taken[pair.paradigm] += 1
                pairs.append(pair)
    if not pairs:
        raise LmforgeError(f"{path} holds no minimal pairs")
    return pairs


def _read_file(file: Path) -> list[MinimalPair]:
    pairs = []
    with open(file, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise LmforgeError(f"{file}:{number}: not valid JSON") from None
            texts = [record.get(key) if isinstance(record, dict) else None for key in _SENTENCES]
            if not all(isinstance(text, str) and text.strip() for text in texts):
                raise LmforgeError(
                    f"{file}:{number}: a minimal pair needs the non-empty texts sentence_good "
                    "and sentence_bad"
                )
            pairs.append(MinimalPair(
                *texts, paradigm=str(record.get("UID") or file.stem),
                field=str(record.get("field") or UNSPECIFIED),
                phenomenon=str(record.get("linguistics_term") or UNSPECIFIED),
            ))  # fmt: skip
    return pairs


# --- scoring ------------------------------------------------------------------------------------


def _score_pairs(
    model: LanguageModel,
    tokenizer: Tokenizer,
    pairs: Sequence[MinimalPair],
    batch_size: int,
    progress: bool,
) -> list[tuple[float, float]]:
    """(good, bad) log-likelihood of every pair."""
    scores: list[tuple[float, float]] = []
    with tqdm(
        total=len(pairs), unit="pair", desc="minimal pairs", disable=not progress,
        file=sys.stderr, dynamic_ncols=True,
    ) as bar:  # fmt: skip
        for start in range(0, len(pairs), _PAIRS_PER_CALL):
            chunk = pairs[start : start + _PAIRS_PER_CALL]
            texts = [pair.good for pair in chunk] + [pair.bad for pair in chunk]
            values = sentence_log_likelihoods(model, tokenizer, texts, batch_size=batch_size)
            scores += zip(values[: len(chunk)], values[len(chunk) :], strict=True)
            bar.update(len(chunk))
    return scores


# --- aggregation and outputs --------------------------------------------------------------------


def accuracies(pairs: Sequence[MinimalPair], correct: Sequence[bool]) -> dict[str, Any]:
    """Accuracy in points: `accuracy` the mean over paradigms, `accuracy_over_pairs`; `fields` and
    `phenomena` the mean over their paradigms; `paradigms` each with its field and phenomenon."""
    hits: dict[str, list[bool]] = defaultdict(list)
    first: dict[str, MinimalPair] = {}
    for pair, right in zip(pairs, correct, strict=True):
        hits[pair.paradigm].append(right)
        first.setdefault(pair.paradigm, pair)
    paradigms = {
        name: {"accuracy": 100.0 * sum(rows) / len(rows), "num_pairs": len(rows),
               "field": first[name].field, "phenomenon": first[name].phenomenon}
        for name, rows in hits.items()
    }  # fmt: skip
    return {
        "accuracy": _mean(paradigms.values()),
        "accuracy_over_pairs": 100.0 * sum(correct) / len(correct),
        "num_pairs": len(correct),
        "num_paradigms": len(paradigms),
        "fields": _grouped(paradigms, "field"),
        "phenomena": _grouped(paradigms, "phenomenon"),
        "paradigms": paradigms,
    }


def _mean(paradigms: Iterable[dict[str, Any]]) -> float:
    values = [paradigm["accuracy"] for paradigm in paradigms]
    return sum(values) / len(values)


def _grouped(paradigms: dict[str, dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for paradigm in paradigms.values():
        groups[paradigm[key]].append(paradigm)
    return {
        name: {"accuracy": _mean(members), "num_paradigms": len(members),
               "num_pairs": sum(member["num_pairs"] for member in members)}
        for name, members in sorted(groups.items())
    }  # fmt: skip


def format_table(metrics: dict[str, Any]) -> str:
    """The printed report: overall, then per field, phenomenon and paradigm."""
    lines = [
        f"accuracy {metrics['accuracy']:.1f} (mean over {metrics['num_paradigms']} paradigms), "
        f"{metrics['accuracy_over_pairs']:.1f} over {metrics['num_pairs']} pairs; "
        f"chance {CHANCE:.0f}"
    ]
    for title, key in (("field", "fields"), ("phenomenon", "phenomena"), ("paradigm", "paradigms")):
        width = max(len(title), *(len(name) for name in metrics[key]))
        lines += ["", f"{title:<{width}}  {'pairs':>6}  {'accuracy':>8}"]
        lines += [
            f"{name:<{width}}  {row['num_pairs']:>6}  {row['accuracy']:>8.1f}"
            for name, row in metrics[key].items()
        ]
    return "\n".join(lines)


def _write_outputs(directory: Path, result: MinimalPairsResult) -> tuple[Path, ...]:
    """Charts and pairs.jsonl first, metrics.json last: a folder with metrics.json is complete."""
    directory.mkdir(parents=True, exist_ok=True)
    charts = plot_fields(result.metrics, directory)
    rows, metrics = directory / "pairs.jsonl", directory / "metrics.json"
    with open(rows, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows)
    metrics.write_text(json.dumps(result.metrics, indent=2) + "\n")
    return (*charts, rows, metrics)


def plot_fields(metrics: dict[str, Any], directory: Path) -> list[Path]:
    """One bar chart per field, `field-NAME.png`: its paradigms' accuracies, chance dashed."""
    # Agg: no display needed (servers, CI); imported here so importing lmforge stays light.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for field, summary in metrics["fields"].items():
        names = [n for n, p in metrics["paradigms"].items() if p["field"] == field]
        values = [metrics["paradigms"][name]["accuracy"] for name in names]
        width = max(5.0, 1.5 + 0.3 * len(names))
        figure, axes = plt.subplots(figsize=(width, 6), layout="constrained")
        axes.bar(range(len(names)), values, color="tab:blue")
        axes.axhline(CHANCE, color="tab:red", linestyle="--", label=f"chance ({CHANCE:.0f}%)")
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        axes.set_ylim(0, 100)
        axes.set_ylabel("accuracy (%)")
        plural = "s" if len(names) > 1 else ""
        axes.set_title(f"{field}: {summary['accuracy']:.1f}% over {len(names)} paradigm{plural}")
        axes.legend(loc="lower right")
        # "syntax/semantics" and "syntax_semantics" are both BLiMP fields: keep them apart.
        path = directory / f"field-{re.sub(r'[^A-Za-z0-9_.]+', '-', field)}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths
