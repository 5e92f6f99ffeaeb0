"""Multi-head self- and cross-attention with a KV cache; the kernel is `kernels.attention.attend`.

Self-attention projects queries, keys and values with one fused (3D, D) matrix, rows ordered
[q; k; v] with heads contiguous inside each: one GEMM instead of three. With grouped-query attention
(fewer key/value heads than query heads, Ainslie et al. 2023) it projects queries, and fused
keys/values, separately as cross-attention does: each fused matrix then holds parts of one width,
which checkpoint conversion splits evenly. The cache stores the key/value heads; each is repeated
for its group of query heads just before the kernel (query head h reads key/value head h // group,
as Llama's repeat_kv). Cross-attention projects queries from the decoder and fused keys/values
(2D, D) from the encoder output, which a cache keeps after the first decoding step. Positional
hooks (rotary, score bias) arrive precomputed from the stack in the `ForwardContext`;
self-attention applies both unconditionally (identity / no bias for schemes that lack them).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config.model import AttentionConfig
from lmforge.kernels.attention import attend
from lmforge.kernels.unpadding import Unpadded
from lmforge.layers.context import ForwardContext
from lmforge.layers.masks import AttentionMask
from lmforge.layers.positions import apply_rotary


class Attention(nn.Module):
    """What self- and cross-attention share: head layout, score scale, dropout and the kernel."""

    def __init__(
        self, d_model: int, num_heads: int, cfg: AttentionConfig, *, layer_index: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.d_head = cfg.head_dim or d_model // num_heads
        self.inner = num_heads * self.d_head  # d_model unless heads are narrower (T5 v1.1 small)
        self.dropout = cfg.dropout
        # T5 folds 1/sqrt(d_head) into its initialisation and does not scale scores (Raffel et al.).
        self.scale = self.d_head**-0.5 if cfg.score_scale == "inverse_sqrt" else 1.0
        self.layer_index = layer_index
        """Position of this layer in its stack: its slot in the KV cache."""

    def _split_heads(
        self, x: torch.Tensor, parts: int, num_heads: int | None = None
    ) -> list[torch.Tensor]:
        B, T, _ = x.shape
        heads = num_heads or self.num_heads
        x = x.view(B, T, parts, heads, self.d_head).permute(2, 0, 3, 1, 4)
        return list(x.unbind(0))  # parts x (B, H, T, Dh)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask
    ) -> torch.Tensor:
        """q: (B, H, T, Dh), k and v: (B, H, S, Dh) -> heads side by side, (B, T, H * Dh)."""
        dropout_p = self.dropout if self.training else 0.0
        out = attend(
            q,
            k,
            v,
            attn_mask=mask.mask,
            is_causal=mask.is_causal,
            scale=self.scale,
            dropout_p=dropout_p,
        )
        B, _, T, _ = out.shape
        return out.transpose(1, 2).reshape(B, T, -1)


class SelfAttention(Attention):
    def __init__(
        self, d_model: int, num_heads: int, cfg: AttentionConfig, *, layer_index: int
    ) -> None:
        super().__init__(d_model, num_heads, cfg, layer_index=layer_index)
        self.num_kv_heads = cfg.num_kv_heads or num_heads
        if self.num_kv_heads == num_heads:
            self.qkv_proj = nn.Linear(d_model, 3 * self.inner, bias=cfg.bias)
        else:
            self.q_proj = nn.Linear(d_model, self.inner, bias=cfg.bias)
            self.kv_proj = nn.Linear(d_model, 2 * self.num_kv_heads * self.d_head, bias=cfg.bias)
        self.out_proj = nn.Linear(self.inner, d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D), or (N, D) -> (N, D) real tokens with `ctx.unpadded`."""
        unpadded = ctx.unpadded
        q, k, v = self._project(x, unpadded)
        q, k = apply_rotary(q, k, ctx.rotary)
        if ctx.cache is not None:
            k, v = ctx.cache.update(self.layer_index, k, v)
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        out = self._attend(q, k, v, ctx.mask)
        return self.out_proj(out if unpadded is None else unpadded.unpad(out))

    def _project(self, x: torch.Tensor, unpadded: Unpadded | None) -> list[torch.Tensor]:
        """x: (B, T, D), or (N, D) real tokens -> q (B, H, T, Dh), k and v (B, Hkv, T, Dh).

        The projections run on the real tokens only; their outputs are padded for the kernel."""

        def heads(projected: torch.Tensor, parts: int, num_heads: int) -> list[torch.Tensor]:
            padded = projected if unpadded is None else unpadded.pad(projected)
            return self._split_heads(padded, parts, num_heads)

        if self.num_kv_heads == self.num_heads:
            return heads(self.qkv_proj(x), 3, self.num_heads)
        (q,) = heads(self.q_proj(x), 1, self.num_heads)
        return [q, *heads(self.kv_proj(x), 2, self.num_kv_heads)]

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Hkv, S, Dh) -> (B, H, S, Dh): each key/value head once per query head of its
        group (transformers' repeat_kv)."""
        group = self.num_heads // self.num_kv_heads
        return x if group == 1 else x.repeat_interleave(group, dim=1)


class CrossAttention(Attention):
    def __init__(
        self, d_model: int, num_heads: int, cfg: AttentionConfig, *, layer_index: int
    ) -> None:
        super().__init__(d_model, num_heads, cfg, layer_index=layer_index)
        self.q_proj = nn.Linear(d_model, self.inner, bias=cfg.bias)
        self.kv_proj = nn.Linear(d_model, 2 * self.inner, bias=cfg.bias)
        self.out_proj = nn.Linear(self.inner, d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """x: (B, T, D) decoder states attending to `ctx.memory` (B, S, D) -> (B, T, D)."""
        (q,) = self._split_heads(self.q_proj(x), 1)
        k, v = self._memory_keys_values(ctx)
        return self.out_proj(self._attend(q, k, v, ctx.memory_mask))

    def _memory_keys_values(self, ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, S, Dh) of the encoder output: projected at the first decoding
        step, then read from the cache."""
        cached = ctx.cache.cross[self.layer_index] if ctx.cache is not None else None
        if cached is not None:
            return cached
        assert ctx.memory is not None, "cross-attention needs the encoder output"
        k, v = self._split_heads(self.kv_proj(ctx.memory), 2)
        if ctx.cache is not None:
            ctx.cache.cross[self.layer_index] = (k, v)
        return k, v
