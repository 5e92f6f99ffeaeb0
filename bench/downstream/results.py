"""Print the docs/results.md table from the runs of bench/downstream/finetune.sh.

Usage: python bench/downstream/results.py [OUT]   (default runs/downstream)
Each row: task, model, metric, the test (else validation) score from pretrained weights and from
random initialisation, and the difference in points.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (run name prefix, task, metric keys shown)
ROWS = [
    ("sst2-bert", "SST-2 accuracy", ["accuracy"]),
    ("sst2-gpt2", "SST-2 accuracy", ["accuracy"]),
    ("sst2-t5", "SST-2 accuracy", ["accuracy"]),
    ("sst2-minilm", "SST-2 accuracy", ["accuracy"]),
    ("zeroshot-sst2-gpt2", "SST-2 zero-shot accuracy", ["accuracy"]),
    ("conll-bert", "CoNLL-2003 entity F1", ["f1"]),
    ("conll-minilm", "CoNLL-2003 entity F1", ["f1"]),
    ("squad-bert", "SQuAD EM / F1", ["exact_match", "f1"]),
    ("squad-minilm", "SQuAD EM / F1", ["exact_match", "f1"]),
    ("multi30k-t5", "Multi30k en-de BLEU", ["bleu"]),
    ("scitldr-t5", "SciTLDR ROUGE-L", ["rougeL"]),
]


def score(run: Path, keys: list[str]) -> tuple[list[float], str] | None:
    file = run / "metrics.json"
    if not file.is_file():
        return None
    results = json.loads(file.read_text())
    split = "test" if "test" in results else "validation"
    values = results.get(split, results)
    return [float(values[k]) for k in keys], split


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/downstream") / "finetune"
    print("| task | model | split | pretrained | random init | difference |")
    print("|---|---|---|---|---|---|")
    for prefix, task, keys in ROWS:
        pre, rand = score(out / f"{prefix}-pretrained", keys), score(out / f"{prefix}-random", keys)
        if pre is None or rand is None:
            continue
        model = prefix.split("-")[-1]
        show = " / ".join
        diff = show(f"{p - r:+.1f}" for p, r in zip(pre[0], rand[0], strict=True))
        print(
            f"| {task} | {model} | {pre[1]} | {show(f'{v:.1f}' for v in pre[0])} | "
            f"{show(f'{v:.1f}' for v in rand[0])} | {diff} |"
        )


if __name__ == "__main__":
    main()
