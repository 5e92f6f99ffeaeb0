"""Fine-tuning parity with transformers: one set of initial weights per pair, fine-tuned once by
`lmforge finetune` and once by a plain PyTorch loop over the matching transformers class.

    python bench/finetune_parity.py [--pairs sst2-bert ...] [--seeds 0 1 2] [--smoke]
        [--data ../shared/data] [--out DIR] [--json FILE] [--dropout 0.1] [--max-steps N]

Per model type (BERT, RoBERTa, GPT-2, BLOOM, T5, BART): a tokenizer of the family's kind trained on
the shared corpus (`lmforge tokenizer train`), `lmforge pretrain PRESET --train.max_steps=1` on
100 KB of it (as good as a random init, which is all parity needs) and `lmforge convert --to-hf`;
one initial model serves all pairs of its type. Per pair and seed:

- lmforge: `lmforge finetune TASK RUN` in this process; its best validation score (metrics.json),
  its logged step-1 loss (metrics.jsonl) and its time in training steps (train_seconds);
- transformers: the exported folder in AutoModelFor{SequenceClassification, TokenClassification,
  QuestionAnswering, Seq2SeqLM}. lmforge's step-0 state is rebuilt here with the calls
  training/finetune.py makes (same seed, same order): its task head weights go into the
  transformers head, its task object tokenizes and collates the batches both sides train on, in
  lmforge's order (`random.Random(seed)` shuffle + pop, a new permutation every epoch), with the
  same AdamW groups (training/optim.py), warmup + linear decay, clipping, dropout rates, steps and
  evaluation steps. Scores come from the task's own decoding and lmforge.evaluation (the
  transformers model behind the call signature of lmforge's task models); seq2seq text from
  transformers' own `generate` with lmforge's settings (beams, length penalty, lengths);
- first step: both models before any update, in eval mode (no dropout), on the first batch: the
  losses agree within 1e-4 (`--smoke` asserts it, for every pair) and the gradient norms are
  reported; the rebuilt lmforge state replays the CLI's logged step-1 loss (its dropout included),
  which proves the head and batches copied to the transformers side are the CLI run's.

Tokens/s: the non-padding encoder and decoder tokens of the training batches (the same batches on
both sides) over each side's seconds in training steps; evaluation is not counted. Results: a table
on stdout and JSON (`--json`, default OUT/parity.json); finished (pair, seed) runs are kept in OUT
and reused, so an interrupted benchmark resumes. `--smoke`: width-32 models, the first lines of
every dataset (OUT/data-sample), 16 training examples, 3 steps, no dropout but the heads' own.

lmforge's task heads and dropout sites have the structure of the transformers classes (`MODELS`
maps each head module to its transformers module), so the first-step gradient norms agree too
(`--smoke` asserts both, the norms within 1e-4 relative). The pooler is copied like the head (a
RoBERTa export keeps it outside model.safetensors: no RoBERTa class has one). The QA loss is
lmforge's on both sides (padding masked out of the start/end softmax; transformers' own counts it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from finetune_parity_hf import step_zero, transformers_side

from lmforge.cli.main import main as lmforge_cli

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SQUAD = "squad_v1.1/dev-v1.1.json"
TOLERANCE = 1e-4
"""Largest first-step loss difference, and relative gradient-norm difference, `--smoke` accepts
(fp32)."""


@dataclasses.dataclass(frozen=True)
class ModelType:
    """How the initial model of a model type is made, and which head weights transformers gets."""

    preset: str
    tokenizer: str
    head: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Per transformers class kind: our module -> the transformers module given its weights."""
    objective: str | None = None


_ENCODER_HEADS = {"token": {"head.proj": "classifier"}, "span": {"head.proj": "qa_outputs"}}
MODELS = {
    "bert": ModelType("bert-tiny", "wordpiece", _ENCODER_HEADS | {"sequence": {
        "backbone.pooler.dense": "bert.pooler.dense", "head.proj": "classifier"}}),
    "roberta": ModelType("roberta-tiny", "bpe", _ENCODER_HEADS | {"sequence": {
        "backbone.pooler.dense": "classifier.dense", "head.proj": "classifier.out_proj"}}),
    "gpt2": ModelType("gpt2-tiny", "bpe", {"sequence": {"head.proj": "score"}}),
    "bloom": ModelType("bloom-tiny", "bpe", {"sequence": {"head.proj": "score"}}),
    "t5": ModelType("t5-tiny", "unigram", objective="span_corruption"),
    "bart": ModelType("bart-tiny", "bpe", objective="bart_denoising"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dataset:
    task: str
    """The `lmforge finetune` task."""
    kind: str
    """The transformers class: sequence | token | span | seq2seq | words (label-word generation)."""
    args: tuple[str, ...]
    """Data and task options; {data} is the shared data folder."""
    full: tuple[str, ...]
    """Training options of the benchmark proper."""
    smoke: tuple[str, ...] = ()
    """Options `--smoke` adds (beside SMOKE)."""
    cheap: bool = False
    """Three seeds by default (the others one)."""


_SST2 = ("--data.train={data}/sst/stsa.binary.train",
         "--data.validation={data}/sst/stsa.binary.dev", "--task.max_length=64")  # fmt: skip
_SEQ2SEQ_SMOKE = ("--task.max_source_length=32", "--task.max_target_length=16",
                  "--task.num_beams=2")  # fmt: skip
DATASETS = {
    "sst2": Dataset(
        task="classify", kind="sequence", cheap=True, args=_SST2,
        full=("--train.epochs=3", "--train.batch_size=32", "--train.lr=1e-4"),
    ),
    "sst2-words": Dataset(
        task="classify", kind="words", cheap=True,
        args=(*_SST2, "--task.label_words=0=negative,1=positive"),
        full=("--train.epochs=3", "--train.batch_size=32", "--train.lr=3e-4"),
    ),
    "conll": Dataset(
        task="tag", kind="token", cheap=True,
        args=("--data.train={data}/conll2003/eng.train",
              "--data.validation={data}/conll2003/eng.testa"),
        full=("--train.epochs=2", "--train.batch_size=32", "--train.lr=3e-4"),
        smoke=("--task.max_length=64",),
    ),
    "squad": Dataset(  # SQuAD v1.1 dev split by article: the last 10 of 48 articles validate
        task="qa", kind="span",
        args=("--data.train={data}/" + SQUAD, "--data.validation_split=0.21"),
        full=("--task.max_length=192", "--task.stride=64", "--train.epochs=2",
              "--train.batch_size=32", "--train.lr=3e-4", "--data.max_eval_examples=1000"),
        smoke=("--task.max_length=64", "--task.stride=16", "--task.max_question_length=16"),
    ),
    "multi30k": Dataset(
        task="seq2seq", kind="seq2seq",
        args=("--data.train={data}/multi30k/train", "--data.validation={data}/multi30k/val",
              "--task.source_lang=en", "--task.target_lang=de", "--task.kind=translation"),
        full=("--task.max_source_length=64", "--task.max_target_length=64",
              "--data.max_train_examples=10000", "--data.max_eval_examples=300",
              "--train.epochs=3", "--train.batch_size=64", "--train.lr=3e-4",
              "--eval.batch_size=128"),
        smoke=_SEQ2SEQ_SMOKE,
    ),
    "scitldr": Dataset(
        task="seq2seq", kind="seq2seq",
        args=("--data.train={data}/scitldr/train.jsonl",
              "--data.validation={data}/scitldr/dev.jsonl", "--task.kind=summarization"),
        full=("--task.max_source_length=192", "--task.max_target_length=48",
              "--data.max_eval_examples=200", "--train.epochs=3", "--train.batch_size=16",
              "--train.lr=3e-4"),
        smoke=_SEQ2SEQ_SMOKE,
    ),
}  # fmt: skip
PAIRS = {
    "sst2-bert": ("sst2", "bert"), "sst2-roberta": ("sst2", "roberta"),
    "sst2-gpt2": ("sst2", "gpt2"), "sst2-bloom": ("sst2", "bloom"),
    "conll-bert": ("conll", "bert"), "conll-roberta": ("conll", "roberta"),
    "squad-bert": ("squad", "bert"), "squad-roberta": ("squad", "roberta"),
    "multi30k-t5": ("multi30k", "t5"), "multi30k-bart": ("multi30k", "bart"),
    "scitldr-t5": ("scitldr", "t5"), "scitldr-bart": ("scitldr", "bart"),
    "sst2-words-t5": ("sst2-words", "t5"),
}  # fmt: skip

SIDES = ("lmforge", "transformers")
COMMON = ("--log.progress=false", "--log.tensorboard=false", "--log.every=1", "--run.device=cpu")
SMOKE = ("--train.max_steps=3", "--train.batch_size=4", "--data.max_train_examples=16",
         "--data.max_eval_examples=8", "--eval.batch_size=8")  # fmt: skip
SMOKE_MODEL = ("--model.d_model=32", "--model.num_heads=2", "--model.num_layers=2",
               "--model.d_ff=128")  # fmt: skip
# Tokenizer text: English prose of the shared corpus (15 MB), plus Multi30k's German side, so that
# the translation pairs' tokenizers know German pieces (as T5's covers its target languages).
CORPUS = ("tinyshakespeare/input.txt", "brown/brown_plain.txt", "us_speeches",
          "gutenberg/austen-*.txt", "gutenberg/chesterton-*.txt",
          "gutenberg/melville-moby_dick.txt", "multi30k/train.de")  # fmt: skip
SMOKE_LINES = {"sst/stsa.binary.train": 64, "sst/stsa.binary.dev": 16, "conll2003/eng.train": 300,
               "conll2003/eng.testa": 150, "multi30k/train.en": 32, "multi30k/train.de": 32,
               "multi30k/val.en": 16, "multi30k/val.de": 16, "scitldr/train.jsonl": 32,
               "scitldr/dev.jsonl": 16}  # fmt: skip
"""Lines `--smoke` keeps of each file (sample_data)."""


# --- the initial weights ----------------------------------------------------------------------


def lmforge(*argv: str) -> None:
    """One `lmforge` command, run in this process; a failure stops the benchmark."""
    code = lmforge_cli(list(argv))
    if code:
        sys.exit(f"error: `lmforge {' '.join(argv[:2])}` failed (exit {code})")


def sample_text(data: Path, out: Path) -> list[str]:
    """100 KB of the corpus: the one pretraining step's data, and the smoke tokenizers' text."""
    sample = out / "corpus-sample.txt"
    if not sample.is_file():
        text = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
        sample.write_text(text[:100_000], encoding="utf-8")
    return [str(sample)]


def sample_data(data: Path, out: Path) -> Path:
    """The first lines of every file the pairs read (SQuAD: two paragraphs of each of its first
    five articles) under OUT/data-sample: a smoke run then reads kilobytes, not megabytes."""
    root = out / "data-sample"
    for relative, count in SMOKE_LINES.items():
        target = root / relative
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(data / relative, encoding="utf-8") as source:
                target.write_text("".join(itertools.islice(source, count)), encoding="utf-8")
    squad = root / SQUAD
    if not squad.is_file():
        full = json.loads((data / SQUAD).read_text(encoding="utf-8"))
        articles = [article | {"paragraphs": article["paragraphs"][:2]} for article in full["data"]]
        squad.parent.mkdir(parents=True, exist_ok=True)
        squad.write_text(json.dumps(full | {"data": articles[:5]}), encoding="utf-8")
    return root


def initial_model(name: str, data: Path, out: Path, smoke: bool) -> tuple[Path, Path]:
    """(lmforge run, its transformers export) of model type `name`, made once per OUT."""
    model = MODELS[name]
    run, export = out / "init" / name, out / "init" / f"{name}-hf"
    if export.is_dir():
        return run, export
    tokenizer, prepared = out / "tokenizers" / model.tokenizer, out / "data" / model.tokenizer
    sample = sample_text(data, out)
    if not (tokenizer / "tokenizer.json").is_file():
        vocab = (600 if model.tokenizer == "unigram" else 512) if smoke else 8192
        text = (
            sample if smoke else [str(p) for pattern in CORPUS for p in sorted(data.glob(pattern))]
        )
        lmforge("tokenizer", "train", "--kind", model.tokenizer, "--vocab-size", str(vocab),
                "--input", *text, "--out", str(tokenizer), "--no-progress")  # fmt: skip
    if not (prepared / "manifest.json").is_file():
        lmforge("data", "prepare", "--input", *sample, "--tokenizer", str(tokenizer), "--out",
                str(prepared), "--workers", "1", "--val-fraction", "0.05", "--no-progress",
                "--overwrite")  # fmt: skip
    shutil.rmtree(run, ignore_errors=True)
    shrink = [*SMOKE_MODEL] if smoke else []
    if smoke and model.objective:
        shrink.append("--model.num_decoder_layers=2")
    objective = [f"--objective.kind={model.objective}"] if model.objective else []
    lmforge("pretrain", model.preset, f"--data.path={prepared}", f"--run.dir={run}",
            "--train.max_steps=1", "--train.batch_size=2", "--train.seq_len=64",
            "--eval.max_batches=1", "--log.progress=false", "--log.tensorboard=false",
            *objective, *shrink)  # fmt: skip
    lmforge("convert", "--to-hf", str(run), str(export))
    return run, export


# --- lmforge's side and its step-0 state ------------------------------------------------------


def finetune_options(pair: str, seed: int, data: Path, args: argparse.Namespace) -> list[str]:
    """`lmforge finetune` options of a pair; the transformers side reads the same."""
    dataset = DATASETS[PAIRS[pair][0]]
    options = [arg.format(data=data) for arg in dataset.args]
    options += [*COMMON, f"--run.seed={seed}"]
    if args.smoke:
        return [*options, *SMOKE, *dataset.smoke, "--train.dropout=0"]
    options += [*dataset.full, f"--train.dropout={args.dropout}"]
    return options + ([f"--train.max_steps={args.max_steps}"] if args.max_steps else [])


def lmforge_side(task: str, run: Path, options: list[str], run_dir: Path) -> dict[str, Any]:
    """`lmforge finetune`: best validation metrics, train_seconds and the logged step-1 loss."""
    lmforge("finetune", task, str(run), f"--run.dir={run_dir}", *options)
    results = json.loads((run_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(row["loss"] for row in rows if row["step"] == 1 and "loss" in row)
    return {"validation": results["validation"], "seconds": results["train_seconds"],
            "logged_first_loss": first}  # fmt: skip


def run_pair(pair: str, seed: int, init: tuple[Path, Path], args: argparse.Namespace) -> dict:
    """Both sides of one (pair, seed); the result is kept in OUT/PAIR/seedN/result.json."""
    folder = Path(args.out) / pair / f"seed{seed}"
    saved = folder / "result.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    dataset, model = DATASETS[PAIRS[pair][0]], MODELS[PAIRS[pair][1]]
    run, export = init
    data = sample_data(Path(args.data), Path(args.out)) if args.smoke else Path(args.data)
    options = finetune_options(pair, seed, data, args)
    shutil.rmtree(folder / "lmforge", ignore_errors=True)
    ours = lmforge_side(dataset.task, run, options, folder / "lmforge")
    zero = step_zero(dataset.task, run, options)
    theirs = transformers_side(dataset.kind, export, model.head.get(dataset.kind, {}), zero, seed)
    first = theirs.pop("first_step") | {"logged_loss": ours.pop("logged_first_loss")}
    metric, tokens = zero.task.metric, theirs.pop("tokens")
    result = {"pair": pair, "seed": seed, "metric": metric, "train_tokens": tokens,
              "first_step": first}  # fmt: skip
    for side, values in (("lmforge", ours), ("transformers", theirs)):
        result[side] = values | {"score": values["validation"][metric]}
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=2) + "\n")
    return result


def summarize(results: list[dict]) -> list[dict]:
    """One row per pair: mean scores, the seed-to-seed spread (the larger side's max - min), the
    gap, tokens/s of both sides over all seeds (None where lmforge's train_seconds, rounded to
    0.1 s, is 0) and the largest first-step loss difference."""
    rows = []
    for pair in dict.fromkeys(result["pair"] for result in results):
        runs = [result for result in results if result["pair"] == pair]
        ours = [run["lmforge"]["score"] for run in runs]
        theirs = [run["transformers"]["score"] for run in runs]
        spread = max(max(ours) - min(ours), max(theirs) - min(theirs))
        gap = statistics.mean(ours) - statistics.mean(theirs)
        tokens = sum(run["train_tokens"] for run in runs)
        seconds = {side: sum(run[side]["seconds"] for run in runs) for side in SIDES}
        speed = {side: tokens / seconds[side] if seconds[side] else None for side in SIDES}
        ratio = None if speed["lmforge"] is None else speed["lmforge"] / speed["transformers"]
        first = max(abs(run["first_step"]["loss_difference"]) for run in runs)
        rows.append({"pair": pair, "metric": runs[0]["metric"], "seeds": len(runs),
                     "lmforge": statistics.mean(ours), "transformers": statistics.mean(theirs),
                     "gap": gap, "spread": spread, "score_ok": abs(gap) <= max(spread, 1.0),
                     "lmforge_tokens_per_s": speed["lmforge"],
                     "transformers_tokens_per_s": speed["transformers"],
                     "speedup": ratio,
                     "first_loss_difference": first})  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        f"{'pair':<15} {'metric':<8} {'seeds':>5} {'lmforge':>8} {'transf.':>8} {'gap':>6} "
        f"{'spread':>6} {'lmf tok/s':>9} {'hf tok/s':>9} {'speed':>6} {'1st-loss diff':>13}"
    )
    for r in rows:
        mark = "" if r["score_ok"] else " *"
        ours, theirs, ratio = (r["lmforge_tokens_per_s"], r["transformers_tokens_per_s"],
                               r["speedup"])  # fmt: skip
        print(
            f"{r['pair']:<15} {r['metric']:<8} {r['seeds']:>5} {r['lmforge']:>8.2f} "
            f"{r['transformers']:>8.2f} {r['gap']:>+6.2f} {r['spread']:>6.2f} "
            f"{'-' if ours is None else f'{ours:.0f}':>9} {theirs:>9.0f} "
            f"{'-' if ratio is None else f'{ratio:.2f}x':>6} {r['first_loss_difference']:>13.2e}"
            f"{mark}"
        )
    print("Targets: |gap| <= max(spread, 1 point) (* where not), speed >= 1.3x")


def first_step_failures(results: list[dict]) -> list[str]:
    """Pairs whose first-step losses or gradient norms disagree, or whose rebuilt lmforge state
    does not replay the CLI run's step 1 (then the head and batches given to transformers are not
    the run's)."""
    failures = []
    for result in results:
        first, name = result["first_step"], f"{result['pair']} (seed {result['seed']})"
        if not abs(first["loss_difference"]) < TOLERANCE:
            failures.append(f"{name}: first-step losses differ by {first['loss_difference']:.2e}")
        if not abs(first["grad_norm_difference"]) < TOLERANCE:
            failures.append(
                f"{name}: first-step gradient norms differ by "
                f"{first['grad_norm_difference']:.2e} (relative)"
            )
        if not abs(first["replayed_loss"] - first["logged_loss"]) <= 1e-6:
            failures.append(
                f"{name}: the rebuilt state gives step-1 loss "
                f"{first['replayed_loss']:.6f}, the CLI run {first['logged_loss']:.6f}"
            )
    return failures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs",
        nargs="+",
        choices=PAIRS,
        default=list(PAIRS),
        metavar="PAIR",
        help=f"default: all ({', '.join(PAIRS)})",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="default: 0 1 2 on the cheap pairs (SST-2, CoNLL), 0 on the others",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="width-32 models, 16 examples, 3 steps; assert first-step parity",
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared datasets folder")
    parser.add_argument("--out", help="default: runs/finetune-parity[-smoke]")
    parser.add_argument("--json", help="default: OUT/parity.json")
    parser.add_argument("--max-steps", type=int, help="stop every run after this many steps")
    parser.add_argument(
        "--dropout", type=float, default=0.1, help="fine-tuning dropout of both sides (--smoke: 0)"
    )
    args = parser.parse_args(argv)
    args.out = args.out or ("runs/finetune-parity-smoke" if args.smoke else "runs/finetune-parity")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        print(f"error: {data} not found; pass --data DIR, the shared datasets", file=sys.stderr)
        return 2
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("error: the reference side needs transformers: pip install transformers",
              file=sys.stderr)  # fmt: skip
        return 2
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for pair in args.pairs:
        dataset, model = PAIRS[pair]
        init = initial_model(model, data, out, args.smoke)
        seeds = args.seeds or ([0, 1, 2] if DATASETS[dataset].cheap and not args.smoke else [0])
        results += [run_pair(pair, seed, init, args) for seed in seeds]
    rows = summarize(results)
    print_table(rows)
    json_file = Path(args.json or out / "parity.json")
    json_file.write_text(json.dumps({"pairs": rows, "runs": results}, indent=2) + "\n")
    failures = first_step_failures(results) if args.smoke else []
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
