"""Multi-head self- and cross-attention with a KV cache; the kernel is `kernels.attention.attend`.

Self-attention projects queries, keys and values with one fused (3D, D) matrix, rows ordered
[q; k; v] with heads contiguous inside each: one GEMM instead of three. Cross-attention projects
queries from the decoder and fused keys/values (2D, D) from the encoder output, which a cache keeps
after the first decoding step. Positional hooks (rotary, score bias) arrive precomputed from the
stack.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config.model import AttentionConfig
from lmforge.kernels.attention import attend
from lmforge.kernels.unpadding import Unpadded
from lmforge.layers.kv_cache import KVCache
from lmforge.layers.masks import AttentionMask
from lmforge.layers.positions import Rotary, apply_rotary


class Attention(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, cfg: AttentionConfig, *, is_cross: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.d_head = cfg.head_dim or d_model // num_heads
        inner = num_heads * self.d_head  # d_model unless heads are narrower (T5 v1.1 small)
        self.dropout = cfg.dropout
        # T5 folds 1/sqrt(d_head) into its initialisation and does not scale scores (Raffel et al.).
        self.scale = self.d_head**-0.5 if cfg.score_scale == "inverse_sqrt" else 1.0
        self.is_cross = is_cross
        if is_cross:
            self.q_proj = nn.Linear(d_model, inner, bias=cfg.bias)
            self.kv_proj = nn.Linear(d_model, 2 * inner, bias=cfg.bias)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * inner, bias=cfg.bias)
        self.out_proj = nn.Linear(inner, d_model, bias=cfg.bias)

    def _split_heads(self, x: torch.Tensor, parts: int) -> list[torch.Tensor]:
        B, T, _ = x.shape
        x = x.view(B, T, parts, self.num_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return list(x.unbind(0))  # parts x (B, H, T, Dh)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: AttentionMask,
        rotary: Rotary | None = None,
        cache: KVCache | None = None,
        layer_index: int = 0,
        memory: torch.Tensor | None = None,
        unpadded: Unpadded | None = None,
    ) -> torch.Tensor:
        """x: (B, T, D), or (N, D) real tokens with `unpadded`, which the output follows;
        memory: (B, S, D) encoder output for cross-attention."""
        if self.is_cross:
            q, k, v = self._cross_qkv(x, memory, cache, layer_index)
        else:
            qkv = self.qkv_proj(x)
            q, k, v = self._split_heads(qkv if unpadded is None else unpadded.pad(qkv), 3)
            q, k = apply_rotary(q, k, rotary)
            if cache is not None:
                k, v = cache.update(layer_index, k, v)
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
        out = out.transpose(1, 2).reshape(B, T, -1)
        return self.out_proj(out if unpadded is None else unpadded.unpad(out))

    def _cross_qkv(
        self, x: torch.Tensor, memory: torch.Tensor | None, cache: KVCache | None, layer_index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (q,) = self._split_heads(self.q_proj(x), 1)
        cached = cache.cross[layer_index] if cache is not None else None
        if cached is None:
            assert memory is not None, "cross-attention needs the encoder output"
            k, v = self._split_heads(self.kv_proj(memory), 2)
            if cache is not None:
                cache.cross[layer_index] = (k, v)
        else:
            k, v = cached
        return q, k, v
