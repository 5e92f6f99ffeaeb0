"""`lmforge finetune TASK PRETRAINED [--section.key=value ...]` and `lmforge predict RUN`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.config.finetune import TASKS

_EXAMPLE = (
    "example: lmforge finetune classify runs/bert --run.dir=runs/sst2 "
    "--data.train=sst/stsa.binary.train --data.validation=sst/stsa.binary.dev --train.epochs=3\n"
    "Sections: run (dir, seed, device), data (train, validation, test, validation_split, "
    "max_train_examples, max_eval_examples), train (epochs, max_steps, batch_size, "
    "micro_batch_size, lr, warmup_ratio, weight_decay, grad_clip, precision, init, dropout), "
    "eval (every, patience, batch_size), log (every, tensorboard, progress), task (per task)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained model on a downstream task",
        description="Fine-tune a pretrained run (or a converted transformers checkpoint).",
        epilog=_EXAMPLE,
    )
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, entry in TASKS.items():
        task = tasks.add_parser(
            name, help=entry.description, description=entry.description, epilog=_EXAMPLE
        )
        task.add_argument("pretrained", metavar="PRETRAINED", help="run or checkpoint directory")
        task.set_defaults(func=run, accepts_overrides=True)

    predict = subparsers.add_parser(
        "predict",
        help="apply a fine-tuned run to new inputs, writing jsonl",
        description="Apply the best checkpoint of a `lmforge finetune` run to the examples of "
        "FILE (the task's training formats; labels optional) and write one JSON line each.",
    )
    predict.add_argument("run_dir", metavar="RUN", help="a fine-tuning run directory")
    predict.add_argument("--input", required=True, help="file of inputs")
    predict.add_argument("--output", default="-", help="jsonl file to write (default: stdout)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument(
        "--allow-partial",
        action="store_true",
        help="use a run that never finished (no metrics.json): its best checkpoint so far",
    )
    predict.set_defaults(func=run_predict)


def run(args: argparse.Namespace) -> int:
    from lmforge.config.finetune import load_finetune_config
    from lmforge.training.finetune import finetune

    config = load_finetune_config(args.task, args.pretrained, args.overrides)
    results = finetune(config)
    run_dir = Path(config.run.dir)
    best = ", ".join(f"{k} {v:.2f}" for k, v in results["validation"].items())
    print(f"best validation (step {results['best_step']}): {best}")
    if "test" in results:
        print("test: " + ", ".join(f"{k} {v:.2f}" for k, v in results["test"].items()))
    print(f"run saved in {run_dir} (metrics.json, predictions.jsonl, curves.png)")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import sys

    from lmforge.api import load_finetuned
    from lmforge.run_dir import write_jsonl

    finetuned = load_finetuned(args.run_dir, device="cpu", allow_partial=args.allow_partial)
    rows = finetuned.predict(Path(args.input), batch_size=args.batch_size)
    if args.output == "-":
        sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        write_jsonl(Path(args.output), rows)
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    return 0
