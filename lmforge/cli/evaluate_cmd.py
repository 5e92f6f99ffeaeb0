"""`lmforge evaluate zero-shot PRETRAINED --data FILE`: classify with a decoder's likelihoods, no
training (lmforge.tasks.zero_shot), beside the majority-class and uniform-random baselines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a pretrained model without fine-tuning (zero-shot)",
        description="Evaluate a pretrained model without fine-tuning it.",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    commands = parser.add_subparsers(dest="evaluation", metavar="EVALUATION")
    zero_shot = commands.add_parser(
        "zero-shot",
        help="zero- or few-shot classification by verbalizer likelihood (decoder models)",
        description=(
            "Classify each example by the label whose word the model finds most likely after the "
            'prompt, e.g. --label-words "0=negative,1=positive" --template '
            '"Review: {text}\\nSentiment:". With --train and --shots K, K solved examples '
            "(class-balanced, drawn with --seed) precede each prompt."
        ),
    )
    _add_zero_shot_arguments(zero_shot)
    zero_shot.set_defaults(func=run_zero_shot)


def _add_zero_shot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pretrained", metavar="PRETRAINED", help="run or checkpoint directory")
    parser.add_argument(
        "--data", required=True, metavar="FILE",
        help="labelled examples: csv/tsv/jsonl or `LABEL TEXT` lines (SST, TREC)",
    )  # fmt: skip
    parser.add_argument("--train", metavar="FILE", help="where few-shot demonstrations come from")
    parser.add_argument("--shots", type=int, default=0, help="demonstrations per prompt (K)")
    parser.add_argument(
        "--label-words", default="", metavar="LABEL=WORD,...",
        help="the word scored for each label (default: the labels themselves)",
    )  # fmt: skip
    parser.add_argument(
        "--template", default=None,
        help=r"prompt with {FIELD} placeholders; \n is a newline (default: fields, then Answer:)",
    )  # fmt: skip
    parser.add_argument("--text-fields", default="text", help="comma-separated text columns")
    parser.add_argument("--label-field", default="label", help="label column")
    parser.add_argument(
        "--normalize", choices=("none", "length"), default="none",
        help="score: sum of the word's token log-probs (none) or their mean (length)",
    )  # fmt: skip
    parser.add_argument(
        "--calibrate", action="store_true",
        help="contextual calibration (Zhao et al. 2021): divide out the label probabilities of "
        "content-free inputs (N/A, empty, [MASK]) under the same prompt",
    )  # fmt: skip
    parser.add_argument("--output", metavar="DIR", help="write metrics.json, predictions.jsonl")
    parser.add_argument("--max-examples", type=int, default=0, help="first N examples; 0: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demonstrations")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument(
        "--init",
        choices=["pretrained", "random"],
        default="pretrained",
        help="random: the same architecture freshly initialised (seeded by --seed), the baseline "
        "that shows what pretraining brings",
    )


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_zero_shot(args: argparse.Namespace) -> int:
    import torch

    from lmforge.models.lm import build_model
    from lmforge.tasks import zero_shot
    from lmforge.training.pretrained import load_pretrained

    _check_arguments(args)
    fields = [field.strip() for field in args.text_fields.split(",") if field.strip()]
    examples, train = _read_examples(args, fields)
    labels = zero_shot.sort_labels({e.label for e in [*examples, *train] if e.label is not None})
    words = zero_shot.parse_label_words(args.label_words, labels)
    zero_shot.check_labels(examples, words, args.data)
    template = args.template if args.template is not None else zero_shot.default_template(fields)
    # Shells pass "\n" through as two characters; a template needs real newlines.
    template = template.replace("\\n", "\n").replace("\\t", "\t")
    verbalizer = zero_shot.Verbalizer(template, tuple(fields), words)
    demonstrations = (
        zero_shot.choose_demonstrations(train, args.shots, list(words), args.seed)
        if args.shots
        else []
    )
    contexts = [zero_shot.build_context(verbalizer, demonstrations, e) for e in examples]
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, _ = load_pretrained(args.pretrained, device=device)
    if args.init == "random":
        torch.manual_seed(args.seed)
        model = build_model(model.config, device=device).eval()
    if model.config.family != "decoder":
        family = model.config.family.replace("_", "-")
        raise LmforgeError(
            f"zero-shot scoring needs a decoder (GPT-2, BLOOM); {args.pretrained} is an {family} "
            "model: fine-tune it instead (lmforge finetune classify)"
        )
    started = time.perf_counter()
    scores = zero_shot.score_labels(
        model, tokenizer, verbalizer, contexts, normalize=args.normalize,
        batch_size=args.batch_size,
    )  # fmt: skip
    if args.calibrate:
        content_free = [
            zero_shot.build_context(verbalizer, demonstrations, e)
            for e in zero_shot.content_free_examples(len(fields))
        ]
        content_free_scores = zero_shot.score_labels(
            model, tokenizer, verbalizer, content_free, normalize=args.normalize
        )
        scores = zero_shot.calibrate(scores, content_free_scores)
    seconds = time.perf_counter() - started
    predictions = [zero_shot.predict_label(row) for row in scores]
    references = [e.label for e in examples]
    metrics = _metrics(predictions, references, list(words))
    _print_metrics(metrics, args, len(examples), seconds)
    if args.output:
        settings = {
            "pretrained": str(args.pretrained), "init": args.init, "data": str(args.data),
            "train": args.train,
            "shots": args.shots, "seed": args.seed, "label_words": words, "template": template,
            "normalize": args.normalize, "calibrate": args.calibrate,
            "num_examples": len(examples),
            "demonstrations": [verbalizer.demonstration(d) for d in demonstrations],
        }  # fmt: skip
        _write_outputs(Path(args.output), {**metrics, **settings}, examples, predictions, scores)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.shots < 0:
        raise LmforgeError("--shots must be >= 0")
    if args.shots and not args.train:
        raise LmforgeError(f"--shots {args.shots} needs --train FILE to draw demonstrations from")
    if args.batch_size < 1:
        raise LmforgeError("--batch-size must be at least 1")
    if args.max_examples < 0:
        raise LmforgeError("--max-examples must be >= 0 (0: all)")
    if not [field for field in args.text_fields.split(",") if field.strip()]:
        raise LmforgeError("--text-fields names no column; e.g. --text-fields text")


def _read_examples(args: argparse.Namespace, fields: list[str]) -> tuple[list, list]:
    from lmforge.data.labelled import read_classification

    examples = read_classification(args.data, text_fields=fields, label_field=args.label_field)
    if args.max_examples:
        examples = examples[: args.max_examples]
    train = []
    if args.train:
        train = read_classification(args.train, text_fields=fields, label_field=args.label_field)
    return examples, train


def _metrics(predictions: list[str], references: list[str], labels: list[str]) -> dict[str, float]:
    from lmforge.evaluation.classification import accuracy, macro_f1
    from lmforge.tasks.zero_shot import baselines

    return {
        "accuracy": accuracy(predictions, references),
        "macro_f1": macro_f1(predictions, references),
        **baselines(references, labels),
    }


def _print_metrics(
    metrics: dict[str, float], args: argparse.Namespace, count: int, seconds: float
) -> None:
    shots = f"{args.shots}-shot" if args.shots else "zero-shot"
    calibrated = ", calibrated" if args.calibrate else ""
    print(
        f"{shots}{calibrated} classification of {count} examples of {args.data} ({seconds:.1f} s)"
    )
    print(f"{'':<16}{'accuracy':>10}{'macro-F1':>10}")
    for name, key in (
        ("model", ""),
        ("majority class", "majority_"),
        ("uniform random", "random_"),
    ):
        print(f"{name:<16}{metrics[key + 'accuracy']:>10.2f}{metrics[key + 'macro_f1']:>10.2f}")


def _write_outputs(
    directory: Path,
    metrics: dict[str, Any],
    examples: list,
    predictions: list[str],
    scores: list[dict[str, float]],
) -> None:
    from lmforge.run_dir import PREDICTIONS_FILE, RESULTS_FILE, write_json, write_jsonl

    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / RESULTS_FILE, metrics)
    rows = []
    for example, prediction, row in zip(examples, predictions, scores, strict=True):
        text = example.texts[0] if len(example.texts) == 1 else list(example.texts)
        record = {"text": text, "label": example.label, "prediction": prediction}
        rows.append({**record, "scores": row})
    write_jsonl(directory / PREDICTIONS_FILE, rows)
    print(f"wrote {directory / RESULTS_FILE} and {directory / PREDICTIONS_FILE}")
