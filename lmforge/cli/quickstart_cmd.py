"""`lmforge quickstart`: tokenizer, data, a few minutes of pretraining and a sample, in one command.

With no --input it trains on a real English corpus every Python has: the interpreter's own
documentation (`builtin:python-docs`, about 1.5 MB). The number of steps is calibrated on this
machine so that training takes about --minutes, and the model and its dropout are sized to the
corpus: how many passes over the training tokens the budget buys decides them (`size_run`). It
evaluates ten times, keeps the weights of the best evaluation and samples from them.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
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
    "eval.max_batches": "0",
    "checkpoint.keep_best": "true",
    "log.every": "10",
}
TOKENS_PER_STEP = 8 * 256  # train.batch_size x train.seq_len above
EVALUATIONS = 10  # often enough that the best is near the true minimum of validation loss
OVERHEAD = 0.92  # ~8% of the time goes to evaluations, checkpoints and logging

# The models the quickstart chooses between, smallest first: the --preset, and (for the default
# preset) the width and depth of nanoGPT's GPU shakespeare recipe, 6 x 384, 10.7 M parameters.
LARGER_MODEL = "6x384"
LARGER_OVERRIDES = {
    "model.num_layers": "6",
    "model.d_model": "384",
    "model.num_heads": "6",
    "model.d_ff": "1536",
}

# Passes over the training tokens (tokens seen / training tokens) -> dropout. Measured on
# tinyshakespeare (issue 14): gpt2-tiny with dropout 0.1 bottoms out at ~8 passes and rises after;
# nanoGPT's 6 x 384 with dropout 0.2 still improves after ~80. Under one pass every token is new
# and dropout only slows learning.
DROPOUT_BY_PASSES = ((1.0, 0.0), (4.0, 0.1), (math.inf, 0.2))
LARGER_MODEL_MIN_PASSES = 6.0
"""The larger model is chosen when it still sees the corpus this many times (and at most
MAX_PASSES): then the budget is large for the corpus, and capacity with dropout 0.2 beats more
passes of the small model. Uncalibrated: the 5-minute shakespeare run never reaches it."""
MAX_PASSES = 40.0
"""Beyond this a model of these sizes only memorizes: the run is shortened instead (the budget is
then not all spent), and a corpus that small gets the small model."""


@dataclass(frozen=True)
class Sizing:
    """What the quickstart trains: `model` (a key of the step times given), its steps, dropout,
    and the passes over the training tokens those steps make."""

    model: str
    steps: int
    dropout: float
    passes: float

    def describe(self, train_tokens: int) -> str:
        return (
            f"corpus {train_tokens:,} training tokens; {self.steps:,} steps x "
            f"{TOKENS_PER_STEP:,} tokens = {self.passes:.1f} passes -> model {self.model}, "
            f"dropout {self.dropout:g}"
        )


def size_run(train_tokens: int, step_seconds: dict[str, float], budget_s: float) -> Sizing:
    """Choose the model (among `step_seconds`, smallest first: name -> seconds per step), its
    number of steps and its dropout from the corpus size and the time budget."""
    if train_tokens <= 0:
        raise LmforgeError("the training split holds no tokens; give a larger --input")
    names = list(step_seconds)

    def passes_of(name: str) -> float:
        return _steps_in(budget_s, step_seconds[name]) * TOKENS_PER_STEP / train_tokens

    model = names[0]
    for name in names[1:]:  # the largest that makes enough passes, on a corpus not too small
        if LARGER_MODEL_MIN_PASSES <= passes_of(name) <= MAX_PASSES:
            model = name
    steps = _steps_in(budget_s, step_seconds[model])
    steps = max(min(steps, int(MAX_PASSES * train_tokens / TOKENS_PER_STEP)), 10)
    passes = steps * TOKENS_PER_STEP / train_tokens
    dropout = next(value for limit, value in DROPOUT_BY_PASSES if passes <= limit)
    return Sizing(model=model, steps=steps, dropout=dropout, passes=passes)


def _steps_in(budget_s: float, step_seconds: float) -> int:
    return max(int(budget_s * OVERHEAD / step_seconds), 10)  # ten steps at the least


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
    precision, sizing, model_overrides = choose_run(args, out / "data", precisions)
    overrides = {**QUICKSTART_TRAIN, **model_overrides, "train.precision": precision}
    overrides |= {
        "model.dropout": f"{sizing.dropout:g}",
        "train.max_steps": str(sizing.steps),
        "eval.every": str(max(sizing.steps // EVALUATIONS, 1)),
        "checkpoint.every": str(max(sizing.steps // 2, 1)),
        "data.path": str(out / "data"),
        "run.dir": str(out / "run"),
    }
    model = args.preset if sizing.model == args.preset else f"{args.preset} at {sizing.model}"
    print(f"[3/4] pretraining {model} in {precision} for {sizing.steps} steps")
    code = lmforge(["pretrain", args.preset, *(f"--{k}={v}" for k, v in overrides.items())])
    if code:
        return code
    # The best evaluation's weights: on a small corpus the last steps may have begun to overfit.
    best = out / "run" / "checkpoints" / "best"
    source = best if best.is_dir() else out / "run"
    print(f"[4/4] sampling from {source}")
    # Three samples: an empty prompt starts a new document, and some documents are short.
    return lmforge(["generate", str(source), "--prompt", args.prompt, "--num-samples", "3",
                    "--max-new-tokens", "120", "--temperature", "0.8"])  # fmt: skip


def choose_run(
    args: argparse.Namespace, data_dir: Path, precisions: list[str]
) -> tuple[str, Sizing, dict[str, str]]:
    """Time the preset, size the run to the corpus (`size_run`), and time the larger model
    before committing to it; print the decision. Returns (precision, sizing, model overrides)."""
    budget_s = args.minutes * 60
    train_tokens = _train_tokens(data_dir)
    precision, seconds = calibrate(args.preset, QUICKSTART_TRAIN, data_dir, precisions)
    step_seconds = {args.preset: seconds}
    candidates = {args.preset: {}}
    if args.preset == "gpt2-tiny":
        # Estimated from the FLOPs ratio first: timing it is only worth it if it may be chosen.
        candidates[LARGER_MODEL] = LARGER_OVERRIDES
        step_seconds[LARGER_MODEL] = seconds * _flops_ratio(args.preset, LARGER_OVERRIDES)
    sizing = size_run(train_tokens, step_seconds, budget_s)
    if sizing.model != args.preset:
        larger = {**QUICKSTART_TRAIN, **LARGER_OVERRIDES}
        _, step_seconds[LARGER_MODEL] = calibrate(args.preset, larger, data_dir, [precision])
        sizing = size_run(train_tokens, step_seconds, budget_s)
    print("      " + sizing.describe(train_tokens))
    return precision, sizing, candidates[sizing.model]


def _train_tokens(data_dir: Path) -> int:
    """Tokens of the training split, from the manifest `data prepare` wrote."""
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    return int(manifest["splits"]["train"]["num_tokens"])


def _flops_ratio(preset: str, overrides: dict[str, str]) -> float:
    """Training FLOPs per token of `preset` with `overrides` over those of `preset`."""
    from lmforge.config.loading import load_run_config
    from lmforge.training.flops import training_flops_per_token

    def flops(extra: dict[str, str]) -> float:
        fixed = {"run.dir": "-", "data.path": "-", "model.vocab_size": str(TOKENIZER_VOCAB)}
        config = load_run_config(preset, {**QUICKSTART_TRAIN, **extra, **fixed})
        return training_flops_per_token(config.model, config.train.seq_len)

    return flops(overrides) / flops({})


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
