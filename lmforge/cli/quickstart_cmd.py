"""`lmforge quickstart`: tokenizer, data, a few minutes of pretraining and a sample, in one command.

With no --input it trains on a real English corpus every Python has: the interpreter's own
documentation (`builtin:python-docs`, about 1.5 MB). The number of steps is calibrated on this
machine so that training takes about --minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmforge.errors import LmforgeError

# Settings of the quickstart model, tuned on 2 CPU cores (docs/quickstart.md has the measurements).
TOKENIZER_VOCAB = 2048
QUICKSTART_TRAIN = {
    "train.seq_len": "256",
    "train.batch_size": "8",
    "train.lr": "2e-3",
    "train.warmup_steps": "50",
    "train.weight_decay": "0.1",
    "model.dropout": "0.1",  # a few epochs over a small corpus: dropout keeps val loss falling
    "eval.max_batches": "0",
    "log.every": "10",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="train a tokenizer, prepare data, pretrain a tiny GPT for a few minutes, sample",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input",
        nargs="+",
        default=["builtin:python-docs"],
        metavar="SPEC",
        help="corpus: files, globs, directories, hf:NAME (default: builtin:python-docs)",
    )
    parser.add_argument("--out", default="quickstart", help="folder for tokenizer, data and run")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    parser.add_argument("--preset", default="gpt2-tiny", help="model preset (default gpt2-tiny)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: whichever trains faster on this machine (bf16 autocast where the CPU has it)",
    )
    parser.add_argument("--prompt", default="", help="text to continue after training")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.cli.main import main as lmforge

    out = Path(args.out)
    if (out / "run").exists():
        raise LmforgeError(f"{out / 'run'} already exists; pass --out NEW_FOLDER or delete it")
    if args.minutes <= 0:
        raise LmforgeError("--minutes must be > 0")
    inputs = list(args.input)
    print(
        f"[1/4] training a {TOKENIZER_VOCAB}-token byte-level BPE tokenizer on {' '.join(inputs)}"
    )
    code = lmforge(["tokenizer", "train", "--kind", "bpe", "--vocab-size", str(TOKENIZER_VOCAB),
                    "--input", *inputs, "--out", str(out / "tokenizer")])  # fmt: skip
    if code:
        return code
    print("[2/4] preparing data: last 10% of the text held out for validation")
    code = lmforge(
        [
            "data",
            "prepare",
            "--input",
            *inputs,
            "--tokenizer",
            str(out / "tokenizer"),
            # fmt: skip
            "--out",
            str(out / "data"),
            "--split",
            "tail",
            "--val-fraction",
            "0.1",
        ]
    )
    if code:
        return code
    precisions = ["fp32", "bf16"] if args.precision == "auto" else [args.precision]
    precision, step_seconds = calibrate(args.preset, QUICKSTART_TRAIN, out / "data", precisions)
    # ~8% of the time goes to evaluations, checkpoints and logging.
    max_steps = max(int(args.minutes * 60 * 0.92 / step_seconds), 10)
    overrides = {**QUICKSTART_TRAIN, "train.precision": precision}
    overrides |= {
        "train.max_steps": str(max_steps),
        "eval.every": str(max(max_steps // 5, 1)),
        "checkpoint.every": str(max(max_steps // 2, 1)),
        "data.path": str(out / "data"),
        "run.dir": str(out / "run"),
    }
    print(
        f"[3/4] pretraining {args.preset} in {precision} for {max_steps} steps "
        f"(about {args.minutes:g} minutes at {step_seconds:.2f} s/step)"
    )
    code = lmforge(["pretrain", args.preset, *(f"--{k}={v}" for k, v in overrides.items())])
    if code:
        return code
    print("[4/4] sampling from the trained model")
    # Three samples: an empty prompt starts a new document, and some documents are short.
    return lmforge(["generate", str(out / "run"), "--prompt", args.prompt, "--num-samples", "3",
                    "--max-new-tokens", "120", "--temperature", "0.8"])  # fmt: skip


def calibrate(
    preset: str, overrides: dict[str, str], data_dir: Path, precisions: list[str]
) -> tuple[str, float]:
    """The fastest of `precisions` on this machine and its seconds per step, from real steps."""
    import torch

    from lmforge.bench import median_step_seconds, our_train_step
    from lmforge.config.loading import load_run_config
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.models.lm import build_model
    from lmforge.training.precision import Precision
    from lmforge.training.run import resolve_vocab_size

    config = load_run_config(preset, {**overrides, "run.dir": "-", "data.path": str(data_dir)})
    model_config = resolve_vocab_size(config.model, load_tokenizer(data_dir), explicit=False)
    model = build_model(model_config)
    shape = (config.train.batch_size, config.train.seq_len)
    batch = torch.randint(0, model_config.vocab_size, shape)
    timings = {}
    for precision in precisions:
        Precision.from_name(precision, "cpu")  # refuses what the CPU cannot train in
        step = our_train_step(model, batch, precision)
        timings[precision] = median_step_seconds({precision: step}, warmup=2, steps=5)[precision]
    best = min(timings, key=timings.get)
    print("      step time: " + ", ".join(f"{p} {s:.2f} s" for p, s in timings.items()))
    return best, timings[best]
