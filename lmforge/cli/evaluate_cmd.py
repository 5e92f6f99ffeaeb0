"""`lmforge evaluate zero-shot PRETRAINED --data FILE`: classify with a decoder's likelihoods, no
training, beside the majority-class and uniform-random baselines. The work is
`lmforge.tasks.zero_shot_evaluation.evaluate_zero_shot`; this module parses and prints.
`lmforge evaluate minimal-pairs PRETRAINED --data BLIMP`: grammaticality by minimal pairs, any
family (`lmforge.tasks.minimal_pairs.evaluate_minimal_pairs`)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any


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
    minimal_pairs = commands.add_parser(
        "minimal-pairs",
        help="grammatical knowledge by minimal pairs (BLiMP), any model family",
        description=(
            "Score both sentences of each minimal pair (BLiMP format: sentence_good, "
            "sentence_bad, optional UID, field, linguistics_term); a pair is right when the good "
            "one scores higher. Decoders: summed log-probability; encoders: pseudo-log-likelihood; "
            "encoder-decoders: log-likelihood as the decoder's target (see docs/finetune.md)."
        ),
    )
    _add_minimal_pairs_arguments(minimal_pairs)
    minimal_pairs.set_defaults(func=run_minimal_pairs)


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
    from lmforge.tasks.zero_shot_evaluation import ZeroShotOptions, evaluate_zero_shot

    # Each option is the flag of the same name.
    options = ZeroShotOptions(**{f.name: getattr(args, f.name) for f in fields(ZeroShotOptions)})
    result = evaluate_zero_shot(args.pretrained, options, output=args.output)
    _print_metrics(result.metrics, result.seconds)
    if result.files:
        print(f"wrote {' and '.join(str(path) for path in result.files)}")
    return 0


def _print_metrics(metrics: dict[str, Any], seconds: float) -> None:
    shots = f"{metrics['shots']}-shot" if metrics["shots"] else "zero-shot"
    calibrated = ", calibrated" if metrics["calibrate"] else ""
    count, data = metrics["num_examples"], metrics["data"]
    print(f"{shots}{calibrated} classification of {count} examples of {data} ({seconds:.1f} s)")
    print(f"{'':<16}{'accuracy':>10}{'macro-F1':>10}")
    for name, key in (
        ("model", ""),
        ("majority class", "majority_"),
        ("uniform random", "random_"),
    ):
        print(f"{name:<16}{metrics[key + 'accuracy']:>10.2f}{metrics[key + 'macro_f1']:>10.2f}")


def _add_minimal_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pretrained", metavar="PRETRAINED", help="run or checkpoint directory")
    parser.add_argument(
        "--data", required=True, metavar="PATH", help="a BLiMP .jsonl file or a folder of them"
    )
    parser.add_argument("--output", metavar="DIR", help="write metrics.json, pairs.jsonl, charts")
    parser.add_argument("--max-pairs", type=int, default=0, help="first N pairs per paradigm")
    parser.add_argument(
        "--batch-size", type=int, default=64,
        help="sequences per forward pass (encoders: masked copies, one per token)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of --init random")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument(
        "--init", choices=["pretrained", "random"], default="pretrained",
        help="random: the same architecture freshly initialised (seeded by --seed)",
    )  # fmt: skip


def run_minimal_pairs(args: argparse.Namespace) -> int:
    from lmforge.tasks.minimal_pairs import (
        MinimalPairsOptions,
        evaluate_minimal_pairs,
        format_table,
    )

    # Each option is the flag of the same name.
    options = MinimalPairsOptions(
        **{f.name: getattr(args, f.name) for f in fields(MinimalPairsOptions)}
    )
    result = evaluate_minimal_pairs(args.pretrained, options, output=args.output)
    count, data = result.metrics["num_pairs"], result.metrics["data"]
    print(f"minimal pairs: {count} pairs of {data} ({result.seconds:.1f} s)")
    print(format_table(result.metrics))
    if result.files:
        print(f"wrote {len(result.files)} files into {args.output}")
    return 0
