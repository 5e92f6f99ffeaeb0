"""softmax(q k^T * scale + mask) v: `scaled_dot_product_attention`, or three plain ops on the CPU.

`attend` takes SDPA's arguments and returns SDPA's result (within bf16 rounding, tested against it
in tests/kernels/test_attention.py); only the kernel that computes it is chosen here.

SDPA is the kernel everywhere except one measured case: bf16 on the CPU with short sequences, where
its flash kernel runs at 60-160 GFLOP/s while the same attention as a batched matmul, a softmax and
a second matmul (oneDNN's bf16 GEMMs at 600-800 GFLOP/s) takes 2-3x less time, forward and
backward (2-core AMD EPYC, torch 2.13, B x H = 32-64, T = S = 256-512, Dh = 64;
docs/benchmarks.md). That path keeps the (B, H, T, S) probabilities for the backward pass, so it is
taken only while they stay small (`MATMUL_ATTENTION_MAX_SCORES`); longer sequences go to SDPA, whose
memory is linear in S. Its numerics are those of eager bf16 attention in `transformers` (bf16
scores, softmax accumulated in fp32 by the CPU kernel).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lmforge.kernels.dispatch import cpu_kernels_apply

MATMUL_ATTENTION_MAX_SCORES = 1 << 24
"""Largest B * H * T * S (scores of one layer: 32 MiB in bf16) the CPU matmul path takes."""


def _uses_matmul_attention(q: torch.Tensor, k: torch.Tensor) -> bool:
    B, H, T, _ = q.shape
    return (
        cpu_kernels_apply(q.device)
        and q.dtype == torch.bfloat16
        and T > 1  # one query (cached decoding): SDPA's kernel is already cheap there
        and B * H * T * k.shape[2] <= MATMUL_ATTENTION_MAX_SCORES
        and not torch.compiler.is_compiling()
    )


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    dropout_p: float,
) -> torch.Tensor:
    """F.scaled_dot_product_attention(q, k, v, ...): q (B, H, T, Dh), k and v (B, H, S, Dh),
    attn_mask an additive (B|1, H|1, T, S) float mask -> (B, H, T, Dh)."""
    attn_mask = attn_mask if attn_mask is None else attn_mask.to(q.dtype)
    if not _uses_matmul_attention(q, k):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
    B, H, T, Dh = q.shape
    S = k.shape[2]
    q, k, v = (t.reshape(B * H, -1, Dh) for t in (q, k, v))  # (B*H, T|S, Dh), as bmm needs them
    if attn_mask is None and is_causal:
        # The bias broadcasts over B*H, so the GEMM adds it in its epilogue: no pass of its own.
        scores = torch.baddbmm(
            _causal_bias(T, S, q.dtype, q.device), q, k.transpose(1, 2), alpha=scale
        )
    else:
        scores = torch.bmm(q, k.transpose(1, 2))  # (B*H, T, S)
        scores.mul_(scale)  # in place: bmm's backward needs q and k, not its output
        if attn_mask is not None:
            scores.view(B, H, T, S).add_(attn_mask)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.bmm(probs, v).view(B, H, T, Dh)


@functools.lru_cache(maxsize=8)
def _causal_bias(T: int, S: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(T, S): 0 where query i (the last T of S positions) may see key j, -inf after it."""
    future = torch.ones(T, S, dtype=torch.bool, device=device).triu_(S - T + 1)
    return torch.zeros(T, S, dtype=dtype, device=device).masked_fill_(future, float("-inf"))
