"""Training FLOPs per token and the measured matmul peak, for tokens/s -> FLOP/s -> MFU.

Training FLOPs per token follow Kaplan et al. (2020) and PaLM (Chowdhery et al. 2022, appendix B):
6 * N for the weight matmuls (forward 2N, backward 4N), with N the parameters that take part in a
matmul (blocks and output projection; embedding lookups and norms are free), plus 12 * L * D * T for
the attention scores and weighted values of a T-token context.
"""

from __future__ import annotations

import time

import torch

from lmforge.config.model import ModelConfig
from lmforge.kernels.linear import matmul_nt


def matmul_parameters(cfg: ModelConfig, *, target_fraction: float = 1.0) -> int:
    """Weights in a matmul per token; the output projection (and an MLM head's dense transform)
    counts for `target_fraction` of the tokens, the share that carries a label (MLM projects only
    those)."""
    D, F, A = cfg.d_model, cfg.d_ff, cfg.d_attention
    # q and out projections, then k and v (narrower with grouped-query attention).
    attention = 2 * D * A + 2 * D * cfg.num_kv_heads * cfg.d_head
    mlp = (3 if cfg.mlp.gated else 2) * D * F
    cross = 4 * D * A
    num_decoder = cfg.num_decoder_layers or cfg.num_layers
    if cfg.family == "encoder_decoder":
        blocks = cfg.num_layers * (attention + mlp) + num_decoder * (attention + cross + mlp)
    else:
        blocks = cfg.num_layers * (attention + mlp)
    head = cfg.vocab_size * D + (D * D if cfg.head.kind == "transform" else 0)
    return blocks + round(head * target_fraction)


def training_flops_per_token(
    cfg: ModelConfig, seq_len: int, *, target_fraction: float = 1.0
) -> float:
    num_layers = cfg.num_layers + (cfg.num_decoder_layers or cfg.num_layers) * (
        cfg.family == "encoder_decoder"
    )
    return (
        6.0 * matmul_parameters(cfg, target_fraction=target_fraction)
        + 12.0 * num_layers * cfg.d_attention * seq_len
    )


def measure_matmul_peak(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *, size: int = 1024
) -> float:
    """Best-of-several FLOP/s of a (size x size) @ (size x size) matmul on `device`, through
    torch's matmul and through `kernels.linear.matmul_nt` (oneDNN where that is faster), whichever
    is faster: the best GEMM this machine offers."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for product in (torch.matmul, matmul_nt):
        for _ in range(3):
            product(a, b)
        for _ in range(5):
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(4):
                product(a, b)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - start) / 4)
    return 2 * size**3 / best
