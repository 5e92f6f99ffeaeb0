"""`evaluate_zero_shot`: zero- or few-shot classification of a labelled file by a pretrained
decoder, end to end (what `lmforge evaluate zero-shot` runs): read the examples, draw the
demonstrations, load the model, score every label with `lmforge.tasks.zero_shot`, compare with the
majority-class and uniform-random baselines, and optionally write metrics.json and
predictions.jsonl.

    from lmforge.tasks.zero_shot_evaluation import ZeroShotOptions, evaluate_zero_shot
    options = ZeroShotOptions(data="sst/dev.txt", label_words="0=negative,1=positive")
    result = evaluate_zero_shot("runs/gpt2", options)
    result.metrics["accuracy"]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from lmforge.data.labelled import ClassificationExample, read_classification
from lmforge.data.tokenizer import Tokenizer
from lmforge.distributed.setup import choose_device
from lmforge.errors import LmforgeError
from lmforge.evaluation.classification import accuracy, macro_f1
from lmforge.models.lm import DecoderModel
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.zero_shot import (
    Verbalizer,
    baselines,
    build_context,
    calibrate,
    check_labels,
    choose_demonstrations,
    content_free_examples,
    default_template,
    parse_label_words,
    predict_label,
    score_labels,
    sort_labels,
)


@dataclass(frozen=True, kw_only=True)
class ZeroShotOptions:
    """What `evaluate_zero_shot` reads and how it scores: the flags of `lmforge evaluate
    zero-shot` (whose help says more, and which its messages name)."""

    data: str
    """Labelled examples: csv/tsv/jsonl or `LABEL TEXT` lines (SST, TREC)."""
    train: str | None = None
    """Where the `shots` class-balanced demonstrations per prompt are drawn from, with `seed`."""
    shots: int = 0
    label_words: str = ""
    """`LABEL=WORD,...`; empty: each label is its own word."""
    template: str | None = None
    """{FIELD} placeholders, a literal `\\n` is a newline; None: the fields, then `Answer:`."""
    text_fields: str = "text"
    """Comma-separated text columns."""
    label_field: str = "label"
    normalize: Literal["none", "length"] = "none"
    """A label's score: the sum of its word's token log-probabilities (none) or their mean."""
    calibrate: bool = False
    """Contextual calibration (Zhao et al. 2021), see `lmforge.tasks.zero_shot`."""
    max_examples: int = 0
    """Classify the first this many examples; 0: all."""
    seed: int = 0
    """Seeds the demonstrations and the weights of init="random"."""
    batch_size: int = 16
    """Examples per forward pass."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    init: Literal["pretrained", "random"] = "pretrained"
    """random: the same architecture freshly initialised, the baseline that shows what
    pretraining brings."""

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise LmforgeError("--shots must be >= 0")
        if self.shots and not self.train:
            raise LmforgeError(
                f"--shots {self.shots} needs --train FILE to draw demonstrations from"
            )
        if self.batch_size < 1:
            raise LmforgeError("--batch-size must be at least 1")
        if self.max_examples < 0:
            raise LmforgeError("--max-examples must be >= 0 (0: all)")
        if not self.fields:
            raise LmforgeError("--text-fields names no column; e.g. --text-fields text")

    @property
    def fields(self) -> list[str]:
        """The names in `text_fields`."""
        return [field.strip() for field in self.text_fields.split(",") if field.strip()]


@dataclass(frozen=True)
class ZeroShotResult:
    metrics: dict[str, Any]
    """metrics.json: accuracy and macro-F1 (points) of the model, then those of the baselines
    (`majority_*`, `random_*`), then the settings that produced them (template, demonstrations)."""
    rows: list[dict[str, Any]]
    """predictions.jsonl: text, label, prediction and the score of every label, per example."""
    seconds: float
    """Time spent scoring."""
    files: tuple[Path, ...] = ()
    """Where metrics and rows were written (nothing without `output`)."""


def evaluate_zero_shot(
    pretrained: str | Path, options: ZeroShotOptions, *, output: str | Path | None = None
) -> ZeroShotResult:
    """Classify `options.data` with the decoder of a run or checkpoint directory, no training;
    with `output`, write metrics.json and predictions.jsonl into that directory."""
    examples, train = _read_examples(options)
    verbalizer = _verbalizer(options, [*examples, *train])
    check_labels(examples, verbalizer.label_words, options.data)
    demonstrations = (
        choose_demonstrations(train, options.shots, list(verbalizer.label_words), options.seed)
        if options.shots
        else []
    )
    contexts = [build_context(verbalizer, demonstrations, e) for e in examples]
    model, tokenizer = _load_decoder(pretrained, options)
    started = time.perf_counter()
    scores = score_labels(
        model, tokenizer, verbalizer, contexts, normalize=options.normalize,
        batch_size=options.batch_size,
    )  # fmt: skip
    if options.calibrate:
        content_free = [
            build_context(verbalizer, demonstrations, e)
            for e in content_free_examples(len(options.fields))
        ]
        scores = calibrate(
            scores,
            score_labels(model, tokenizer, verbalizer, content_free, normalize=options.normalize),
        )
    seconds = time.perf_counter() - started
    predictions = [predict_label(row) for row in scores]
    references = [e.label for e in examples]
    settings = {
        "pretrained": str(pretrained), "init": options.init, "data": str(options.data),
        "train": options.train, "shots": options.shots, "seed": options.seed,
        "label_words": verbalizer.label_words, "template": verbalizer.template,
        "normalize": options.normalize, "calibrate": options.calibrate,
        "num_examples": len(examples),
        "demonstrations": [verbalizer.demonstration(d) for d in demonstrations],
    }  # fmt: skip
    metrics = {
        "accuracy": accuracy(predictions, references),
        "macro_f1": macro_f1(predictions, references),
        **baselines(references, list(verbalizer.label_words)),
    }
    result = ZeroShotResult({**metrics, **settings}, _rows(examples, predictions, scores), seconds)
    if output is None:
        return result
    return replace(result, files=_write_outputs(Path(output), result))


def _read_examples(options: ZeroShotOptions) -> tuple[list, list]:
    """(the examples to classify, the training examples demonstrations come from)."""
    fields, label_field = options.fields, options.label_field
    examples = read_classification(options.data, text_fields=fields, label_field=label_field)
    if options.max_examples:
        examples = examples[: options.max_examples]
    train = []
    if options.train:
        train = read_classification(options.train, text_fields=fields, label_field=label_field)
    return examples, train


def _verbalizer(options: ZeroShotOptions, examples: list[ClassificationExample]) -> Verbalizer:
    """The template and the word of every label the examples show."""
    labels = sort_labels({e.label for e in examples if e.label is not None})
    words = parse_label_words(options.label_words, labels)
    template = options.template
    if template is None:
        template = default_template(options.fields)
    # Shells pass "\n" through as two characters; a template needs real newlines.
    template = template.replace("\\n", "\n").replace("\\t", "\t")
    return Verbalizer(template, tuple(options.fields), words)


def _load_decoder(
    pretrained: str | Path, options: ZeroShotOptions
) -> tuple[DecoderModel, Tokenizer]:
    model, tokenizer, _ = load_pretrained(
        pretrained, device=choose_device(options.device), init=options.init, seed=options.seed
    )
    if model.config.family != "decoder":
        family = model.config.family.replace("_", "-")
        raise LmforgeError(
            f"zero-shot scoring needs a decoder (GPT-2, BLOOM); {pretrained} is an {family} "
            "model: fine-tune it instead (lmforge finetune classify)"
        )
    return model, tokenizer


def _rows(
    examples: list[ClassificationExample],
    predictions: list[str],
    scores: list[dict[str, float]],
) -> list[dict[str, Any]]:
    rows = []
    for example, prediction, row in zip(examples, predictions, scores, strict=True):
        text = example.texts[0] if len(example.texts) == 1 else list(example.texts)
        rows.append({"text": text, "label": example.label, "prediction": prediction, "scores": row})
    return rows


def _write_outputs(directory: Path, result: ZeroShotResult) -> tuple[Path, Path]:
    """(metrics.json, predictions.jsonl) written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics, predictions = directory / "metrics.json", directory / "predictions.jsonl"
    metrics.write_text(json.dumps(result.metrics, indent=2) + "\n")
    with open(predictions, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows)
    return metrics, predictions
