"""FSDP vs DDP on the CPU: step time and memory per rank, 2 gloo processes, gpt2-30m by default.

Each mode runs in its own `torchrun --nproc-per-node 2` job: the model is built as `lmforge
pretrain` builds it (DDP: the full model on every rank; FSDP: meta build, sharded per block, then
initialised), and trains on random tokens through the trainer's own step (`TrainingStep`,
`gradient_sync`: one gradient synchronisation per optimizer step) for `--warmup` untimed and
`--steps` timed optimizer steps. Per rank it reports the median step time, the bytes of model
state the rank holds (parameters + gradients + AdamW moments: the number FSDP divides by the world
size) and the process' peak RSS (which also holds torch itself and the activations).

    python bench/fsdp_vs_ddp.py [--model gpt2-30m] [--steps 10] [--warmup 2] [--micro-batch 4]
                                [--accumulation 2] [--seq-len 256] [--precision fp32|bf16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2-30m")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=4, help="sequences per forward, rank")
    parser.add_argument("--accumulation", type=int, default=2, help="micro-batches per step")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--worker", choices=("ddp", "fsdp"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = {mode: launch(mode, args) for mode in ("ddp", "fsdp")}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_table(results, args)


def launch(mode: str, args: argparse.Namespace) -> list[dict]:
    """Run one mode as a 2-process torchrun job; its per-rank results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        forwarded = [f"--model={args.model}", f"--steps={args.steps}", f"--warmup={args.warmup}",
                     f"--micro-batch={args.micro_batch}", f"--accumulation={args.accumulation}",
                     f"--seq-len={args.seq_len}", f"--precision={args.precision}"]  # fmt: skip
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                   f"--master-port={_free_port()}", __file__, f"--worker={mode}",
                   f"--out={out}", *forwarded]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
        subprocess.run(command, check=True, env=env)
        return json.loads(out.read_text())


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from lmforge.config.presets import get_preset
    from lmforge.config.schema import TrainSection
    from lmforge.distributed.fsdp import gradient_sync
    from lmforge.distributed.parallelize import parallelize
    from lmforge.distributed.setup import cleanup, init_distributed
    from lmforge.kernels.allocator import keep_freed_memory
    from lmforge.models.lm import build_model
    from lmforge.training.optim import build_optimizer
    from lmforge.training.precision import Precision
    from lmforge.training.sharding import build_sharded_model
    from lmforge.training.step import TrainingStep

    keep_freed_memory()  # the allocator policy of `lmforge pretrain` processes
    context = init_distributed("cpu")
    cfg = get_preset(args.model)
    torch.manual_seed(0)
    if args.worker == "fsdp":
        train = TrainSection(fsdp=True, precision=args.precision)
        model = build_sharded_model(cfg, context, train)
    else:
        model = build_model(cfg, device=context.device)
    wrapped = parallelize(model, context, compile=False)
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
    step = TrainingStep(optimizer=optimizer, parameters=model.parameters(),
                        precision=Precision.from_name(args.precision, "cpu"), grad_clip=1.0,
                        schedule=lambda _: 1e-4)  # fmt: skip
    generator = torch.Generator().manual_seed(context.rank)
    shape = (args.accumulation, args.micro_batch, args.seq_len)
    batches = list(torch.randint(0, cfg.vocab_size, shape, generator=generator))

    def micro_loss(ids: torch.Tensor, is_last: bool) -> torch.Tensor:
        with gradient_sync(wrapped, enabled=is_last):
            return wrapped(ids, labels=ids).loss / args.accumulation

    times = []
    for index in range(args.warmup + args.steps):
        dist.barrier()
        start = time.perf_counter()
        step(index, batches, micro_loss)
        times.append(time.perf_counter() - start)
    state_bytes = _model_state_bytes(model, optimizer)
    result = {
        "rank": context.rank,
        "step_s": statistics.median(times[args.warmup :]),
        "model_state_mib": state_bytes / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens_per_s": 2
        * args.accumulation
        * args.micro_batch
        * args.seq_len
        / statistics.median(times[args.warmup :]),
    }
    gathered = [None, None]
    dist.all_gather_object(gathered, result)
    if context.is_main:
        Path(args.out).write_text(json.dumps(gathered))
    cleanup()


def _model_state_bytes(model, optimizer) -> int:
    """Bytes of parameters, gradients (as they were before zero_grad: one per parameter) and
    AdamW moments this rank holds: its shards under FSDP, everything under DDP."""

    def local(tensor) -> int:
        tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        return tensor.numel() * tensor.element_size()

    params = sum(local(p) for p in model.parameters())
    moments = sum(
        local(value)
        for state in optimizer.state.values()
        for name, value in state.items()
        if name in ("exp_avg", "exp_avg_sq")
    )
    return 2 * params + moments


def print_table(results: dict, args: argparse.Namespace) -> None:
    shape = f"{args.accumulation} x {args.micro_batch} x {args.seq_len}"
    print(f"{args.model}, 2 processes (gloo, CPU), {shape} per rank per step, {args.precision}, "
          f"median of {args.steps} steps")  # fmt: skip
    print("| mode | rank | step (s) | tokens/s (job) | model state / rank (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for mode, ranks in results.items():
        for r in ranks:
            print(f"| {mode} | {r['rank']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
                  f"{r['model_state_mib']:.1f} | {r['peak_rss_mib']:.0f} |")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
