"""Fine-tuning step time on padded batches, with and without padding removal (kernels/unpadding.py).

    python bench/padding_removal.py [--model bert-tiny] [--batch-size 32] [--seq-len 64]

One step = forward of a sequence classifier (the `finetune classify` model) + cross-entropy +
backward + AdamW, on a batch padded to its longest row (which is `seq-len` long), the other rows
shorter so that the given fraction of positions is padding. Both paths alternate step by step in
one process (median of the steps), so load on the machine affects them alike. Prints the
crossover that `unpadding.MIN_PADDING_FRACTION` is set from, and the padding fraction of real
SST-2 fine-tuning batches when ../shared/data and a tokenizer are at hand (`--tokenizer`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.config.presets import get_preset
from lmforge.data.labelled import read_classification
from lmforge.data.tokenizer import load_tokenizer
from lmforge.kernels import apply_cpu_kernels, unpadding
from lmforge.kernels.allocator import keep_freed_memory
from lmforge.models.lm import build_model
from lmforge.tasks.classification import SequenceClassifier
from lmforge.training.optim import build_optimizer
from lmforge.training.precision import Precision

SST2_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst" / "stsa.binary.train"
NEVER, ALWAYS = 2.0, 0.0  # MIN_PADDING_FRACTION values that switch padding removal off / on


def padded_batch(batch_size: int, seq_len: int, padding: float, seed: int = 0) -> dict:
    """Rows of random ids; one row fills seq_len, the others are shorter, `padding` of all
    positions on average being padding."""
    generator = torch.Generator().manual_seed(seed)
    mean = ((1 - padding) * batch_size * seq_len - seq_len) / (batch_size - 1)  # the other rows
    width = min(0.5, 2 * padding)  # lengths spread around the mean by up to +-50%
    spread = 1 - width + 2 * width * torch.rand(batch_size, generator=generator)
    lengths = (mean * spread).round().long().clamp(2, seq_len)
    lengths[0] = seq_len
    mask = (torch.arange(seq_len)[None] < lengths[:, None]).long()
    ids = torch.randint(5, 1000, (batch_size, seq_len), generator=generator) * mask
    return {"input_ids": ids, "attention_mask": mask, "segment_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (batch_size,), generator=generator)}  # fmt: skip


def step_closure(model: torch.nn.Module, batch: dict, precision: str):
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999))

    autocast = Precision(precision, "cpu").autocast

    def step() -> None:
        with autocast():
            scores = model(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
            loss = F.cross_entropy(scores.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_both(step, steps: int) -> tuple[float, float]:
    """Median seconds per step (padded, unpadded), the two paths alternating."""
    times: dict[float, list[float]] = {NEVER: [], ALWAYS: []}
    for index in range(steps + 2):
        for threshold in (NEVER, ALWAYS):
            unpadding.MIN_PADDING_FRACTION = threshold
            start = time.perf_counter()
            step()
            if index >= 2:  # warm-up
                times[threshold].append(time.perf_counter() - start)
    return statistics.median(times[NEVER]), statistics.median(times[ALWAYS])


def sst2_padding(tokenizer_dir: str, batch_size: int, max_length: int) -> float | None:
    """Padding fraction of SST-2 training batches (padded to their longest row, as the classify
    task collates them) under a WordPiece tokenizer."""
    if not SST2_TRAIN.is_file():
        return None
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    examples = read_classification(SST2_TRAIN, text_fields=["text"], label_field="label")
    lengths = [  # + CLS, SEP
        min(len(tokenizer.encode(example.texts[0])) + 2, max_length) for example in examples
    ]
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    real = padded = 0
    for start in range(0, len(order), batch_size):
        rows = [lengths[i] for i in order[start : start + batch_size]]
        real += sum(rows)
        padded += max(rows) * len(rows)
    return 1 - real / padded


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--padding", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.35, 0.5])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--tokenizer", help="a WordPiece tokenizer dir for the SST-2 statistic")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.manual_seed(0)
    print(f"{args.model}, batch {args.batch_size} x {args.seq_len}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| precision | padding | padded ms | padding removed ms | speed-up |")
    print("|---|---|---|---|---|")
    for precision in args.precision:
        backbone = build_model(get_preset(args.model))
        model = apply_cpu_kernels(SequenceClassifier(backbone, 2, 0.1)).train()  # as finetune
        for padding in args.padding:
            batch = padded_batch(args.batch_size, args.seq_len, padding)
            actual = 1 - batch["attention_mask"].float().mean().item()
            padded, removed = time_both(step_closure(model, batch, precision), args.steps)
            print(f"| {precision} | {actual:.2f} | {padded * 1e3:.1f} | {removed * 1e3:.1f} | "
                  f"{padded / removed:.2f}x |")  # fmt: skip
    if args.tokenizer:
        fraction = sst2_padding(args.tokenizer, args.batch_size, args.seq_len)
        if fraction is not None:
            print(f"SST-2 training batches of {args.batch_size}: {fraction:.2f} padding")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
