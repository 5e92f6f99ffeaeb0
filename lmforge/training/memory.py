"""How much memory a training run needs per rank, and whether the device has it, before it starts.

Four parts, in bytes:

- **parameters**: fp32 weights (tied ones once), divided by the shard factor (FSDP: world size);
- **gradients**: fp32, the same size;
- **optimizer state**: AdamW's two fp32 moments per weight plus one fp32 `step` per tensor (the
  layout of torch's fused and foreach AdamW); exact for the optimizer `build_optimizer` makes;
- **activations**: what the forward pass of one micro-batch keeps for the backward pass, counted
  per block as in Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", section 4: 34 x tokens x d_model bytes per layer for GPT shapes in 16-bit), generalised
  to our widths (attention width, d_ff, gated MLPs, cross-attention) and dtypes: the residual
  stream and the norms' inputs stay fp32 under autocast, matmul inputs are in the compute dtype,
  dropout masks one byte. Attention probabilities count only where a kernel keeps them (the CPU
  matmul path for short bf16 sequences, `kernels.attention`); SDPA's flash and memory-efficient
  kernels keep O(T) per head. Under autocast, the bf16/fp16 copies of the weights autocast caches
  for the step are added too. With activation checkpointing a block keeps only its input, and the
  backward pass holds one block's activations at a time while it recomputes them.

The activation count is an estimate, not a measurement: tests/training/test_memory.py holds it to
within a factor of 2 of what autograd saves for tiny models of each family on the CPU (measured:
0.74-1.08 of it in fp32, 0.61-0.84 under bf16 autocast, which keeps a few more fp32 tensors than
counted here). Allocator caching and fragmentation come on top, hence a margin before refusing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config.model import ModelConfig
from lmforge.config.schema import RunConfig
from lmforge.distributed.setup import DistributedContext
from lmforge.errors import LmforgeError
from lmforge.kernels.attention import MATMUL_ATTENTION_MAX_SCORES
from lmforge.kernels.dispatch import cpu_kernels_apply

logger = logging.getLogger(__name__)

GIB = 1 << 30
FP32 = 4
HEADROOM = 0.9
"""Refuse to start above this fraction of the free memory: the allocator's caching and
fragmentation, the CUDA context and the data loader come on top of the estimate."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one rank needs for training, by part."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    """At the chosen micro-batch and sequence length, checkpointed or not as the run is."""
    activations_other: int
    """The same with activation checkpointing the other way round, for comparison."""
    activation_checkpointing: bool
    shard_factor: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        """One line for the log."""
        other = "with" if not self.activation_checkpointing else "without"
        shards = f", sharded {self.shard_factor} ways" if self.shard_factor > 1 else ""
        return (
            f"memory estimate per rank{shards}: parameters {_gib(self.parameters)}, gradients "
            f"{_gib(self.gradients)}, optimizer state {_gib(self.optimizer)}, activations "
            f"{_gib(self.activations)} ({other} activation checkpointing: "
            f"{_gib(self.activations_other)}) = {_gib(self.total)}"
        )


def estimate_memory(
    model: nn.Module,
    cfg: ModelConfig,
    *,
    micro_batch_size: int,
    seq_len: int,
    compute_dtype: torch.dtype,
    device: torch.device | str,
    activation_checkpointing: bool,
    shard_factor: int = 1,
) -> MemoryEstimate:
    """The memory of training `model` (built from `cfg`, on any device, `meta` included) on one
    rank. Encoder-decoder targets are counted at `seq_len` tokens (BART's; T5's are shorter)."""
    assert shard_factor >= 1, "the shard factor is the number of ranks sharing the parameters"
    parameters = list(model.parameters())  # tied tensors appear once
    count = sum(p.numel() for p in parameters)
    weight_bytes = -(-count * FP32 // shard_factor)
    optimizer = -(-(2 * count * FP32 + len(parameters) * FP32) // shard_factor)
    shape = _Shape(cfg, micro_batch_size, seq_len, compute_dtype, torch.device(device))
    # Autocast keeps a compute-dtype copy of every weight a matmul reads, for the whole step.
    weight_copies = 0 if compute_dtype == torch.float32 else count * compute_dtype.itemsize
    full, checkpointed = shape.activations(checkpointed=False), shape.activations(checkpointed=True)
    chosen, other = (checkpointed, full) if activation_checkpointing else (full, checkpointed)
    return MemoryEstimate(
        parameters=weight_bytes,
        gradients=weight_bytes,
        optimizer=optimizer,
        activations=chosen + weight_copies,
        activations_other=other + weight_copies,
        activation_checkpointing=activation_checkpointing,
        shard_factor=shard_factor,
    )


@dataclass(frozen=True)
class _Shape:
    cfg: ModelConfig
    batch: int
    seq_len: int
    dtype: torch.dtype
    device: torch.device

    def activations(self, *, checkpointed: bool) -> int:
        """Bytes the forward pass keeps for the backward pass, over all stacks and the head."""
        cfg, tokens = self.cfg, self.batch * self.seq_len
        stacks = [(cfg.num_layers, False)]  # (layers, cross-attending)
        if cfg.family == "encoder_decoder":
            stacks.append((cfg.num_decoder_layers or cfg.num_layers, True))
        total = 0
        largest_block = 0
        for num_layers, cross in stacks:
            block = tokens * self._block_bytes_per_token(cross=cross) + self._scores_bytes()
            largest_block = max(largest_block, block)
            # Checkpointed: each block keeps its fp32 input; recomputation holds one block.
            total += num_layers * (tokens * cfg.d_model * FP32 if checkpointed else block)
            total += 2 * tokens * cfg.d_model * FP32  # embedding output and final norm input
        total += largest_block if checkpointed else 0
        # The fused loss computes its gradients in the forward pass and keeps them: the hidden
        # states' (tokens x D) and the output weight's (V x D), both fp32 (models/heads.py).
        return total + (tokens + cfg.vocab_size) * cfg.d_model * FP32

    def _block_bytes_per_token(self, *, cross: bool) -> int:
        cfg, act = self.cfg, self.dtype.itemsize
        D, A, F = cfg.d_model, cfg.d_attention, cfg.d_ff
        mask = 1 if cfg.dropout > 0 else 0  # a bool per element of each dropped tensor
        # Norm inputs and the residual stream: fp32, even under autocast.
        norms = (3 if cross else 2) * D * FP32
        # Self-attention: projection input, q, k, v, attention output, output-projection input.
        attention = (D + 3 * A + 2 * A) * act + D * mask
        if cross:  # query projection input, q, output, its projection input; the source's
            # keys and values (as many source tokens as target tokens here)
            attention += (D + 3 * A + 2 * A) * act + D * mask
        # MLP: input, activation input and the down projection's input; gated also the up
        # projection's output and the activation's output.
        mlp = (D + (4 if cfg.mlp.gated else 2) * F) * act + D * mask
        return norms + attention + mlp

    def _scores_bytes(self) -> int:
        """Attention probabilities one layer keeps. On CUDA none: SDPA's flash and memory-efficient
        kernels keep O(T) per head. On the CPU, where a (T, S) path runs: the matmul path for
        short bf16 sequences (kernels.attention), and SDPA's math fallback, which it takes for
        attention dropout and for a score bias that is trained (T5's relative bias); with
        dropout the mask and the dropped probabilities too."""
        cfg = self.cfg
        if not cpu_kernels_apply(self.device):
            return 0
        scores = self.batch * cfg.num_heads * self.seq_len * self.seq_len
        dropout = cfg.attention.dropout > 0
        kept = (
            (self.dtype == torch.bfloat16 and scores <= MATMUL_ATTENTION_MAX_SCORES)
            or dropout
            or cfg.position.kind == "relative_bias"
        )
        per_score = self.dtype.itemsize + (self.dtype.itemsize + 1 if dropout else 0)
        return scores * per_score if kept else 0


def available_memory(device: torch.device | str) -> int | None:
    """Free bytes on `device`: the GPU's free memory (torch.cuda.mem_get_info) or the machine's
    available RAM (MemAvailable in /proc/meminfo, else free pages); None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    model: nn.Module,
    config: RunConfig,
    context: DistributedContext,
    compute_dtype: torch.dtype,
    *,
    shard_factor: int = 1,
) -> MemoryEstimate:
    """Estimate the run's memory for `model` (shapes only: build it on `meta`, before the real
    one takes memory), log it (rank 0) and refuse to start when it cannot fit, unless
    `train.skip_memory_check`."""
    train = config.train
    micro_batch_size = train.micro_batch_size or max(1, train.batch_size // context.world_size)
    estimate = estimate_memory(
        model,
        config.model,
        micro_batch_size=micro_batch_size,
        seq_len=train.seq_len,
        compute_dtype=compute_dtype,
        device=context.device,
        activation_checkpointing=train.activation_checkpointing,
        shard_factor=shard_factor,
    )
    free = available_memory(context.device)
    if context.is_main:
        known = "unknown" if free is None else _gib(free)
        logger.info("%s; free on %s: %s", estimate.describe(), context.device, known)
    if not train.skip_memory_check:
        check_fits(estimate, free, context.device)
    return estimate


def check_fits(
    estimate: MemoryEstimate,
    free: int | None,
    device: torch.device | str,
    *,
    allocated: int = 0,
) -> None:
    """Raise a one-line `LmforgeError` when what `estimate` still has to allocate (all of it less
    the `allocated` bytes already in place) exceeds HEADROOM of the `free` bytes."""
    if free is None or estimate.total - allocated <= HEADROOM * free:
        return
    levers = "lower --train.micro_batch_size (activations scale with it)"
    if not estimate.activation_checkpointing:
        levers += (
            ", set --train.activation_checkpointing=true (activations "
            f"{_gib(estimate.activations)} -> {_gib(estimate.activations_other)})"
        )
    raise LmforgeError(
        f"training needs about {_gib(estimate.total)} per rank (parameters, gradients and "
        f"optimizer state {_gib(estimate.total - estimate.activations)}, activations "
        f"{_gib(estimate.activations)}) but {torch.device(device)} has {_gib(free)} free"
        f"{' besides the model' if allocated else ''}; "
        f"{levers}, or pass --train.skip_memory_check=true to start anyway"
    )


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f} GiB"
