"""TransformerBlock: self-attention, optional cross-attention and an MLP, each a residual sublayer.

Pre-norm (GPT-2, BLOOM, T5)            Post-norm (BERT, RoBERTa, BART)

  x ──┬──────────────────(+)──>          x ──┬──────────────(+)── norm ──>
      └─ norm ─ sublayer ─┘                  └── sublayer ───┘
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from lmforge.config.model import ModelConfig
from lmforge.layers.attention import CrossAttention, SelfAttention
from lmforge.layers.context import ForwardContext
from lmforge.layers.mlp import MLP
from lmforge.layers.norms import build_norm


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
    def __init__(
        self, cfg: ModelConfig, *, layer_index: int, has_cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.placement = cfg.norm.placement
        attention = dict(d_model=cfg.d_model, num_heads=cfg.num_heads, cfg=cfg.attention)
        self.self_attn_norm = build_norm(cfg.norm, cfg.d_model)
        self.self_attn = SelfAttention(**attention, layer_index=layer_index)
        if has_cross_attention:
            self.cross_attn_norm = build_norm(cfg.norm, cfg.d_model)
            self.cross_attn = CrossAttention(**attention, layer_index=layer_index)
        else:
            self.cross_attn = None
        self.mlp_norm = build_norm(cfg.norm, cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.mlp)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D), or (N, D) -> (N, D) real tokens with `ctx.unpadded` (stacks
        without cross-attention)."""
        wiring = dict(placement=self.placement, dropout=self.dropout)
        x = residual(x, partial(self.self_attn, ctx=ctx), self.self_attn_norm, **wiring)
        if self.cross_attn is not None:
            x = residual(x, partial(self.cross_attn, ctx=ctx), self.cross_attn_norm, **wiring)
        return residual(x, self.mlp, self.mlp_norm, **wiring)
