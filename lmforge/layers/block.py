"""TransformerBlock: self-attention, optional cross-attention and an MLP, each as a residual
sublayer.

Pre-norm (GPT-2, BLOOM, T5)            Post-norm (BERT, RoBERTa, BART)

  x ──┬──────────────────(+)──>          x ──┬──────────────(+)── norm ──>
      └─ norm ─ sublayer ─┘                  └── sublayer ───┘
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmforge.config.model import ModelConfig
from lmforge.kernels.unpadding import Unpadded
from lmforge.layers.attention import Attention
from lmforge.layers.kv_cache import KVCache
from lmforge.layers.masks import AttentionMask
from lmforge.layers.mlp import MLP
from lmforge.layers.norms import build_norm
from lmforge.layers.positions import Rotary


def residual(
    x: torch.Tensor,
    sublayer: Callable[[torch.Tensor], torch.Tensor],
    norm: nn.Module,
    *,
    placement: str,
    dropout: nn.Module,
) -> torch.Tensor:
    if placement == "pre":
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, *, has_cross_attention: bool = False) -> None:
        super().__init__()
        self.placement = cfg.norm.placement
        self.self_attn_norm = build_norm(cfg.norm, cfg.d_model)
        self.self_attn = Attention(cfg.d_model, cfg.num_heads, cfg.attention)
        if has_cross_attention:
            self.cross_attn_norm = build_norm(cfg.norm, cfg.d_model)
            self.cross_attn = Attention(cfg.d_model, cfg.num_heads, cfg.attention, is_cross=True)
        else:
            self.cross_attn = None
        self.mlp_norm = build_norm(cfg.norm, cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.mlp)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: AttentionMask,
        rotary: Rotary | None = None,
        cache: KVCache | None = None,
        layer_index: int = 0,
        memory: torch.Tensor | None = None,
        memory_mask: AttentionMask | None = None,
        unpadded: Unpadded | None = None,
    ) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D), or (N, D) -> (N, D) real tokens with `unpadded` (stacks
        without cross-attention); memory: (B, S, D) encoder output when cross-attending."""
        wiring = dict(placement=self.placement, dropout=self.dropout)

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            return self.self_attn(
                h, mask=mask, rotary=rotary, cache=cache, layer_index=layer_index, unpadded=unpadded
            )

        x = residual(x, self_attention, self.self_attn_norm, **wiring)
        if self.cross_attn is not None:

            def cross_attention(h: torch.Tensor) -> torch.Tensor:
                return self.cross_attn(
                    h, mask=memory_mask, cache=cache, layer_index=layer_index, memory=memory
                )

            x = residual(x, cross_attention, self.cross_attn_norm, **wiring)
        return residual(x, self.mlp, self.mlp_norm, **wiring)
