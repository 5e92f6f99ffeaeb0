"""Print the tables of docs/results.md from the runs of bench/downstream/{pretrain,finetune}.sh.

Usage: python bench/downstream/results.py [OUT]   (default runs/downstream)
Pretraining: steps, tokens, training minutes and the last validation numbers of each model.
Downstream: the test (else validation) score from the pretrained weights and from a random
initialisation of the same architecture, and the difference in points, for the six models (and
MiniLM where it ran). Generation (decoders): validation bits per byte pretrained vs untrained, and
the first sample of each. Where finetune.sh ran a
grid of learning rates (run folders PREFIX-INIT-lrLR), each init's row is its run with the best
validation score (the last metric key), whose learning rate is shown.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ENCODERS = ("bert", "roberta")
DECODERS = ("gpt2", "bloom")
SEQ2SEQ = ("t5", "bart")
MODELS = ENCODERS + DECODERS + SEQ2SEQ
# (run name prefix, task, metric keys shown)
ROWS = [
    *((f"sst2-{m}", "SST-2 accuracy", ["accuracy"]) for m in ("bert", "roberta", "gpt2", "bloom")),
    ("sst2-t5", "SST-2 accuracy (label words)", ["accuracy"]),
    *((f"trec-{m}", "TREC accuracy (6 classes)", ["accuracy"]) for m in ENCODERS + DECODERS),
    *(
        (f"zeroshot-{calibration}-sst2-{m}", f"SST-2 zero-shot accuracy{suffix}", ["accuracy"])
        for m in DECODERS
        for calibration, suffix in (("plain", ""), ("calibrated", ", calibrated"))
    ),
    *((f"conll-{m}", "CoNLL-2003 entity F1", ["f1"]) for m in ENCODERS),
    *((f"squad-{m}", "SQuAD v1.1 EM / F1", ["exact_match", "f1"]) for m in ENCODERS),
    *((f"multi30k-{m}", "Multi30k en-de BLEU", ["bleu"]) for m in SEQ2SEQ),
    *((f"scitldr-{m}", "SciTLDR ROUGE-L", ["rougeL"]) for m in SEQ2SEQ),
    *((f"dialogsum-{m}", "DialogSum ROUGE-L", ["rougeL"]) for m in SEQ2SEQ),
    *((f"squadgen-{m}", "SQuAD v1.1 generative EM / F1", ["exact_match", "f1"]) for m in SEQ2SEQ),
    ("sst2-minilm", "SST-2 accuracy", ["accuracy"]),
    ("conll-minilm", "CoNLL-2003 entity F1", ["f1"]),
]


def _score(run: Path, keys: list[str]) -> tuple[list[float], str, float, str] | None:
    """(scores, split, training seconds, learning rate) of the best run of one (task, init)."""
    candidates = [run] if run.is_dir() else sorted(run.parent.glob(f"{run.name}-lr*"))
    finished = [c for c in candidates if (c / "metrics.json").is_file()]
    if not finished:
        return None
    loaded = {c: json.loads((c / "metrics.json").read_text()) for c in finished}
    if "data" in loaded[finished[0]]:  # zero-shot: metrics at the top level, the file named
        results = loaded[finished[0]]
        split = "test" if "test" in Path(results["data"]).name else "validation"
        return [float(results[k]) for k in keys], split, 0.0, "-"
    best = max(finished, key=lambda c: float(loaded[c]["validation"][keys[-1]]))
    results = loaded[best]
    split = "test" if "test" in results else "validation"
    # Grid points are `-lrLR` (AdamW) or `-lrLR-OPTIMIZER` (finetune.sh's `LR:adafactor`).
    point = re.fullmatch(r".*-lr([0-9.e+-]+?)(?:-([a-z]+))?", best.name)
    lr = " ".join(filter(None, point.groups())) if point else "-"
    values = results[split]
    return [float(values[k]) for k in keys], split, float(results["train_seconds"]), lr


# The pretraining step each model is fine-tuned from, where finetune.sh does not take the last one.
FINETUNED_FROM = {"t5": 7000}


def pretraining_table(out: Path) -> None:
    """The logged training and validation numbers at the step fine-tuning starts from."""
    print("| model | steps | tokens | training minutes | val loss | val accuracy / bits per byte |")
    print("|---|---|---|---|---|---|")
    for name in MODELS:
        log = out / name / "metrics.jsonl"
        if not log.is_file():
            continue
        rows = [json.loads(line) for line in log.open()]
        last_step = FINETUNED_FROM.get(name, rows[-1]["step"] if rows else 0)
        train = [r for r in rows if "loss" in r and r["step"] <= last_step]
        val = [r for r in rows if "val_loss" in r and r["step"] <= last_step]
        if not train or not val:
            continue
        last = val[-1]
        extra = f"{last['val_bpb']:.3f} bpb" if "val_bpb" in last else f"{last['val_accuracy']:.3f}"
        print(
            f"| {name} | {train[-1]['step']:,} | {train[-1]['tokens_seen'] / 1e6:.1f} M | "
            f"{train[-1]['elapsed_s'] / 60:.1f} | {last['val_loss']:.3f} | {extra} |"
        )


def _last_bpb(run: Path, up_to: int | None = None) -> float | None:
    """The last validation bits per byte logged by a pretraining run (up to step `up_to`)."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.open()]
    bpb = [r["val_bpb"] for r in rows if "val_bpb" in r and (up_to is None or r["step"] <= up_to)]
    return bpb[-1] if bpb else None


def generation_table(out: Path) -> None:
    """Decoders: the validation bits per byte of the pretraining data, pretrained vs untrained
    (finetune.sh's one step at lr 1e-9), and the first sample of each after its first prompt."""
    print("| model | val bits per byte, pretrained | untrained | difference | samples |")
    print("|---|---|---|---|---|")
    for model in DECODERS:
        pre = _last_bpb(out / model)
        rand = _last_bpb(out / "finetune" / f"generation-{model}-random")
        if pre is None or rand is None:
            continue
        samples = out / "finetune" / f"generation-{model}-pretrained" / "samples.txt"
        print(f"| {model} | {pre:.3f} | {rand:.3f} | {pre - rand:+.3f} | `{samples}` |")
    for model in DECODERS:
        for init in ("pretrained", "random"):
            samples = out / "finetune" / f"generation-{model}-{init}" / "samples.txt"
            if samples.is_file():
                first = samples.read_text().split("-" * 40)[0].strip().replace("\n", " / ")
                print(f"\n{model}, {init}: {first[:300]}")


def downstream_table(out: Path) -> None:
    print(
        "| task | model | split | pretrained | random init | difference | lr (pretrained / random) "
        "| minutes (pretrained) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    show = " / ".join
    for prefix, task, keys in ROWS:
        pre = _score(out / f"{prefix}-pretrained", keys)
        if pre is None:
            continue
        rand = _score(out / f"{prefix}-random", keys)
        model = prefix.split("-")[-1]
        random_cell = show(f"{v:.1f}" for v in rand[0]) if rand else "-"
        diff = show(f"{p - r:+.1f}" for p, r in zip(pre[0], rand[0], strict=True)) if rand else "-"
        minutes = f"{pre[2] / 60:.1f}" if pre[2] else "-"
        lrs = f"{pre[3]} / {rand[3]}" if rand else pre[3]
        print(
            f"| {task} | {model} | {pre[1]} | {show(f'{v:.1f}' for v in pre[0])} | "
            f"{random_cell} | {diff} | {lrs} | {minutes} |"
        )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/downstream")
    pretraining_table(out)
    print()
    downstream_table(out / "finetune")
    print()
    generation_table(out)


if __name__ == "__main__":
    main()
