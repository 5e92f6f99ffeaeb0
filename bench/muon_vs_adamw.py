"""Muon against AdamW: tokens and wall-clock to a target validation loss, per model, each optimizer
at its best learning rate from a small sweep.

    python bench/muon_vs_adamw.py [--models gpt2-tiny bert-tiny t5-tiny] [--steps 1500]
        [--batch-factor 1] [--data ../shared/data] [--out runs/muon-vs-adamw] [--json FILE]
        [--smoke]

Data: the corpus of bench/downstream/pretrain.sh (gutenberg without the King James Bible, brown,
us_speeches, tinyshakespeare), one tokenizer per family trained on it (`lmforge tokenizer train`:
byte-level BPE for GPT-2, cased WordPiece for BERT, Unigram with sentinels for T5) and prepared
once (`lmforge data prepare`, 1% validation), so every run of a model reads the same tokens in the
same order. Recipes: pretrain.sh's (bf16, no dropout; BERT pre-norm with 30% masking at 32 x 128,
GPT-2 and T5 at 8 x 256), `--steps` steps with 10% warmup and cosine decay.

Sweep, per model: AdamW at three learning rates around pretrain.sh's; then Muon
(`--optim.kind=muon`, its update scaled to AdamW's RMS) for the hidden matrices at 1, 2 and 4 times
AdamW's best rate, the rest of the model (embeddings, heads, norms, biases) on AdamW at AdamW's best
rate. The best run of each optimizer is the one with the lowest final validation loss. Target: the
final validation loss of AdamW's best run. Tokens-to-target and seconds-to-target: the first
evaluation (every 5% of the steps) at or below the target; seconds are training-step time only
(trainer_state's `elapsed_s`: no evaluation, no checkpointing), so Muon's Newton-Schulz iterations
are counted. A best rate at the edge of its grid is flagged: the grid should then be widened.

Learning rate against batch size: `--batch-factor K` multiplies every recipe's batch and AdamW's
grid by sqrt(K) (the square-root rule, docs/optimizers.md). Run it with `--steps` divided by K
(the same tokens) into another `--out`: where the rule holds, the best rate is again the grid's
middle one and the final loss is close to the K = 1 run's.

Results: a table on stdout and JSON (`--json`, default OUT/muon_vs_adamw.json). Each run is a run
directory under OUT/runs; a finished one (result.json) is reused, an interrupted one continues from
its last checkpoint (`lmforge pretrain` resumes it), so an interrupted benchmark resumes.
`--smoke`: 100 KB of tinyshakespeare, width-32 models, 3 steps, two rates per optimizer (seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from lmforge.cli.main import main as lmforge_cli

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class Recipe:
    tokenizer: str
    """`lmforge tokenizer train --kind`."""
    batch_size: int
    """Sequences per step (pretrain.sh's)."""
    args: tuple[str, ...]
    """pretrain.sh's training options of this model."""
    adamw_lrs: tuple[float, ...]
    """AdamW's grid, around pretrain.sh's rate."""
    tokenizer_args: tuple[str, ...] = ()


RECIPES = {
    "gpt2-tiny": Recipe("bpe", 8, ("--train.seq_len=256",), adamw_lrs=(1e-3, 2e-3, 4e-3)),
    "bert-tiny": Recipe("wordpiece", 32, ("--train.seq_len=128", "--objective.mask_rate=0.3",
                                          "--model.norm.placement=pre"),
                        adamw_lrs=(5e-4, 1e-3, 2e-3), tokenizer_args=("--cased",)),
    "t5-tiny": Recipe("unigram", 8, ("--train.seq_len=256", "--objective.kind=span_corruption"),
                      adamw_lrs=(5e-4, 1e-3, 2e-3)),
}  # fmt: skip
MUON_FACTORS = (1.0, 2.0, 4.0)
"""Muon's rates, as multiples of AdamW's best (1: Moonlight's one rate for both)."""
COMMON = ("--train.precision=bf16", "--model.dropout=0", "--eval.max_batches=20",
          "--checkpoint.keep_last=1", "--log.progress=false",
          "--log.tensorboard=false")  # fmt: skip
CORPUS = ("gutenberg/*.txt", "brown/brown_plain.txt", "us_speeches", "tinyshakespeare/input.txt")
EXCLUDED = ("bible-kjv",)
"""pretrain.sh's corpus leaves the King James Bible out."""

SMOKE_MODEL = ("--model.d_model=32", "--model.num_heads=2", "--model.num_layers=2",
               "--model.d_ff=64", "--train.seq_len=32", "--train.precision=fp32")  # fmt: skip
SMOKE_BATCH = 4
SMOKE_STEPS = 3
SMOKE_FACTORS = (1.0, 2.0)


# --- data -------------------------------------------------------------------------------------


def lmforge(*argv: str) -> int:
    """One `lmforge` command, run in this process; returns its exit code."""
    return lmforge_cli([str(arg) for arg in argv])


def corpus(data: Path, out: Path, smoke: bool) -> list[str]:
    if smoke:  # 100 KB of tinyshakespeare
        sample = out / "corpus-sample.txt"
        if not sample.is_file():
            text = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
            sample.write_text(text[:100_000], encoding="utf-8")
        return [str(sample)]
    files = [path for pattern in CORPUS for path in sorted(data.glob(pattern))]
    return [str(path) for path in files if not any(name in path.name for name in EXCLUDED)]


def prepare(model: str, data: Path, out: Path, smoke: bool) -> Path:
    """The model's tokenizer and prepared data (made once, reused by every run and rerun)."""
    recipe = RECIPES[model]
    inputs = corpus(data, out, smoke)
    tokenizer, prepared = out / f"{recipe.tokenizer}-tokenizer", out / f"{recipe.tokenizer}-data"
    vocab = (600 if recipe.tokenizer == "unigram" else 512) if smoke else 8192
    if not (tokenizer / "tokenizer.json").is_file():
        check(lmforge("tokenizer", "train", "--kind", recipe.tokenizer, "--vocab-size", vocab,
                      "--input", *inputs, "--out", tokenizer, "--no-progress",
                      *recipe.tokenizer_args), "tokenizer train")  # fmt: skip
    if not (prepared / "manifest.json").is_file():
        check(lmforge("data", "prepare", "--input", *inputs, "--tokenizer", tokenizer, "--out",
                      prepared, "--split-by", "paragraph", "--val-fraction",
                      0.05 if smoke else 0.01, "--no-progress"), "data prepare")  # fmt: skip
    return prepared


def check(code: int, what: str) -> None:
    if code:
        sys.exit(f"error: `lmforge {what}` failed (exit {code})")


# --- runs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    model: str
    batch_size: int
    optimizer: str
    lr: float
    """train.lr: AdamW's rate (with Muon: the rate of the parameters Muon does not take)."""
    muon_lr: float | None = None

    @property
    def name(self) -> str:
        muon = f"-muon_lr{self.muon_lr:g}" if self.muon_lr is not None else ""
        return f"{self.model}-b{self.batch_size}-{self.optimizer}-lr{self.lr:g}{muon}"


def run_args(run: Run, data: Path, run_dir: Path, steps: int, smoke: bool) -> list[str]:
    every = max(1, steps // 20)
    args = [
        "pretrain", run.model, f"--data.path={data}", f"--run.dir={run_dir}",
        f"--train.max_steps={steps}", f"--train.batch_size={run.batch_size}",
        f"--train.lr={run.lr}",
        f"--train.warmup_steps={max(1, steps // 10)}", f"--eval.every={every}",
        f"--log.every={every}", f"--checkpoint.every={0 if smoke else steps // 5}",
        f"--optim.kind={run.optimizer}", *RECIPES[run.model].args, *COMMON,
    ]  # fmt: skip
    if run.muon_lr is not None:
        args.append(f"--optim.muon_lr={run.muon_lr}")
    return args + list(SMOKE_MODEL if smoke else ())


def train(run: Run, data: Path, out: Path, steps: int, smoke: bool) -> dict[str, Any]:
    """One run's evaluations with the tokens and training seconds at each; cached in result.json.
    A run that fails (a diverging rate) is a result too: `failed` with its exit code."""
    run_dir = out / "runs" / run.name
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    code = lmforge(*run_args(run, data, run_dir, steps, smoke))
    result = dataclasses.asdict(run) | {"name": run.name, "steps": steps}
    if code:
        result |= {"failed": code, "evals": [], "final_val_loss": None}
    else:
        result |= read_curve(run_dir)
    result_file.write_text(json.dumps(result, indent=1))
    return result


def read_curve(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = {row["step"]: row for row in rows if "loss" in row}
    evals = [
        {"step": row["step"], "val_loss": row["val_loss"],
         "tokens": trained[row["step"]]["tokens_seen"],
         "seconds": trained[row["step"]]["elapsed_s"]}
        for row in rows if "val_loss" in row
    ]  # fmt: skip
    last = trained[max(trained)]
    return {
        "evals": evals,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "seconds_per_step": last["elapsed_s"] / last["step"],
    }


def sweep(
    model: str, data: Path, out: Path, *, steps: int, batch_factor: int, smoke: bool
) -> list[dict[str, Any]]:
    """AdamW's grid (scaled by sqrt(batch_factor)), then Muon's rates around AdamW's best."""
    recipe = RECIPES[model]
    batch = (SMOKE_BATCH if smoke else recipe.batch_size) * batch_factor
    adamw_lrs = [lr * math.sqrt(batch_factor) for lr in recipe.adamw_lrs[: 2 if smoke else 3]]
    adamw = [train(Run(model, batch, "adamw", lr), data, out, steps, smoke) for lr in adamw_lrs]
    best_lr = best(adamw)["lr"]
    muon = [
        train(Run(model, batch, "muon", best_lr, best_lr * factor), data, out, steps, smoke)
        for factor in (SMOKE_FACTORS if smoke else MUON_FACTORS)
    ]
    return adamw + muon


# --- summary ----------------------------------------------------------------------------------


def _loss(run: dict[str, Any]) -> float:
    """The final validation loss; a failed or diverged run's counts as infinite."""
    loss = run["final_val_loss"]
    return loss if loss is not None and math.isfinite(loss) else math.inf


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=_loss)


def to_target(run: dict[str, Any], target: float) -> dict[str, Any] | None:
    return next((e for e in run["evals"] if e["val_loss"] <= target), None)


def summarize(model: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per optimizer: its best run, whether its rate sits at the grid's edge, and the tokens and
    seconds it took to reach the target (AdamW's best final validation loss)."""
    target = _loss(best([r for r in runs if r["optimizer"] == "adamw"]))
    rows = {}
    for optimizer in ("adamw", "muon"):
        mine = [r for r in runs if r["optimizer"] == optimizer]
        winner = best(mine)
        key = "lr" if optimizer == "adamw" else "muon_lr"
        rates = sorted(r[key] for r in mine)
        reached = to_target(winner, target)
        rows[optimizer] = {
            "run": winner["name"], "lr": winner["lr"], "muon_lr": winner["muon_lr"],
            "edge_of_grid": len(rates) > 1 and winner[key] in (rates[0], rates[-1]),
            "final_val_loss": winner["final_val_loss"],
            "seconds_per_step": winner.get("seconds_per_step"),
            "tokens_to_target": reached and reached["tokens"],
            "seconds_to_target": reached and reached["seconds"],
        }  # fmt: skip
    adamw, muon = rows["adamw"], rows["muon"]
    ratios = {
        f"muon_over_adamw_{what}": muon[what] / adamw[what]
        for what in ("tokens_to_target", "seconds_to_target")
        if muon[what] and adamw[what]
    }
    return {"model": model, "target_val_loss": target, **rows, **ratios}


def print_table(summaries: list[dict[str, Any]]) -> None:
    print("| model | optimizer | lr (muon lr) | final val loss | tokens to target | "
          "seconds to target | s/step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for summary in summaries:
        for optimizer in ("adamw", "muon"):
            row = summary[optimizer]
            lr = f"{row['lr']:g}" + (f" ({row['muon_lr']:g})" if row["muon_lr"] else "")
            lr += " (edge of grid)" if row["edge_of_grid"] else ""
            tokens = f"{row['tokens_to_target']:,}" if row["tokens_to_target"] else "not reached"
            seconds = f"{row['seconds_to_target']:.0f}" if row["seconds_to_target"] else "-"
            per_step = f"{row['seconds_per_step']:.3f}" if row["seconds_per_step"] else "-"
            print(f"| {summary['model']} | {optimizer} | {lr} | {row['final_val_loss']:.4f} | "
                  f"{tokens} | {seconds} | {per_step} |")  # fmt: skip
    for summary in summaries:
        tokens = summary.get("muon_over_adamw_tokens_to_target")
        seconds = summary.get("muon_over_adamw_seconds_to_target")
        verdict = (
            f"Muon needs {tokens:.2f}x the tokens and {seconds:.2f}x the time of AdamW"
            if tokens and seconds
            else "Muon does not reach AdamW's final loss"
        )
        print(f"{summary['model']}: target {summary['target_val_loss']:.4f}; {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    parser.add_argument(
        "--batch-factor",
        type=int,
        default=1,
        help="multiply the batch sizes by this, the AdamW rates by its sqrt",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/muon-vs-adamw"))
    parser.add_argument("--json", type=Path, help="default: OUT/muon_vs_adamw.json")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_STEPS} steps, tiny models")
    args = parser.parse_args(argv)
    if args.batch_factor < 1 or args.steps < 1:
        parser.error("--batch-factor and --steps must be at least 1")
    steps = SMOKE_STEPS if args.smoke else args.steps
    args.out.mkdir(parents=True, exist_ok=True)
    summaries, runs = [], []
    for model in args.models:
        data = prepare(model, args.data, args.out, args.smoke)
        model_runs = sweep(model, data, args.out, steps=steps, batch_factor=args.batch_factor,
                           smoke=args.smoke)  # fmt: skip
        runs += model_runs
        summaries.append(summarize(model, model_runs))
    print_table(summaries)
    report = {"steps": steps, "batch_factor": args.batch_factor, "smoke": args.smoke,
              "summaries": summaries, "runs": runs}  # fmt: skip
    (args.json or args.out / "muon_vs_adamw.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
