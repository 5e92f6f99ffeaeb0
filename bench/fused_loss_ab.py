"""A/B of the fused output projection + cross-entropy against F.linear + F.cross_entropy.

Two identical models train side by side in one process, steps alternating, so machine load lands on
both alike; only the loss function differs.

    python bench/fused_loss_ab.py gpt2-tiny fp32
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F

from lmforge.bench import _random_batch, median_step_seconds, our_train_step
from lmforge.config.presets import get_preset
from lmforge.kernels.allocator import keep_freed_memory
from lmforge.models import heads
from lmforge.models.lm import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("preset")
    parser.add_argument("precision", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    keep_freed_memory()  # the allocator policy of lmforge's own commands
    cfg = get_preset(args.preset)
    input_ids = _random_batch(cfg, args.batch_size, args.seq_len)
    fused_step = our_train_step(build_model(cfg), input_ids, args.precision)
    plain_step = our_train_step(build_model(cfg), input_ids, args.precision)
    fused = heads.linear_cross_entropy

    def plain_loss(hidden, weight, bias, labels):  # noqa: ANN001, ANN202
        return heads.token_loss_sum(F.linear(hidden, weight, bias), labels)

    def unfused() -> None:
        heads.linear_cross_entropy = plain_loss  # LMHead.loss_sum looks it up at call time
        try:
            plain_step()
        finally:
            heads.linear_cross_entropy = fused

    seconds = median_step_seconds(
        {"fused": fused_step, "plain": unfused}, warmup=2, steps=args.steps
    )
    tokens = args.batch_size * args.seq_len
    for name, value in seconds.items():
        print(f"{args.preset} {args.precision} {name}: {tokens / value:,.0f} tokens/s")


if __name__ == "__main__":
    main()
