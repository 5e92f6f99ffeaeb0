"""Stack: embeddings in, hidden states out, through a list of TransformerBlocks.

One class serves as the encoder (bidirectional), the decoder of a decoder-only model (causal) and
the decoder of an encoder-decoder model (causal, cross-attending). Each stack owns its positions
(the score bias is computed here once and shared by all layers, as in T5 and BLOOM), its optional
segment embeddings and embedding norm, and, with pre-norm, the final norm. A forward pass turns its
inputs into one `ForwardContext` (masks, rotary, cache, encoder output, padding-removal layout)
that every block reads.

Activation checkpointing (`set_activation_checkpointing`) is a stack's choice too: it wraps each
block call in `torch.utils.checkpoint`, so a training forward keeps only the blocks' inputs and the
backward pass recomputes each block's inside (Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.config.model import ModelConfig
from lmforge.kernels.unpadding import Unpadded
from lmforge.layers.block import TransformerBlock
from lmforge.layers.context import ForwardContext
from lmforge.layers.kv_cache import KVCache
from lmforge.layers.masks import AttentionMask, build_attention_mask
from lmforge.layers.norms import build_norm
from lmforge.layers.positions import build_positions


class Stack(nn.Module):
    def __init__(
        self, cfg: ModelConfig, num_layers: int, *, is_causal: bool, has_cross_attention: bool
    ) -> None:
        super().__init__()
        self.is_causal = is_causal
        self.has_cross_attention = has_cross_attention
        self.embedding_scale = cfg.d_model**0.5 if cfg.embedding.scale == "sqrt_d_model" else None
        self.positions = build_positions(
            cfg.position,
            d_model=cfg.d_model,
            num_heads=cfg.num_heads,
            d_head=cfg.d_head,
            is_causal=is_causal,
        )
        num_types = cfg.embedding.num_segment_types
        self.segment_embed = nn.Embedding(num_types, cfg.d_model) if num_types else None
        self.embed_norm = build_norm(cfg.norm, cfg.d_model) if cfg.embedding.norm else None
        self.embed_dropout = _dropout(cfg.embedding.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg, layer_index=index, has_cross_attention=has_cross_attention)
            for index in range(num_layers)
        )
        self.final_norm = build_norm(cfg.norm, cfg.d_model) if cfg.norm.placement == "pre" else None
        self.final_dropout = _dropout(cfg.norm.final_dropout)  # T5Stack drops after it
        self.activation_checkpointing = False
        """Recompute each block in the backward pass (training only); a run's choice, not saved."""

    def embed(
        self,
        token_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """token_embeds: (B, T, D) -> input of the first block, (B, T, D)."""
        x = token_embeds if self.embedding_scale is None else token_embeds * self.embedding_scale
        position_vectors = self.positions.embed(position_ids)
        if position_vectors is not None:
            x = x + position_vectors.to(x.dtype)
        if self.segment_embed is not None:
            segments = torch.zeros_like(position_ids) if segment_ids is None else segment_ids
            x = x + self.segment_embed(segments)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.embed_dropout(x)

    def forward(
        self,
        token_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the stack.

        Args:
            token_embeds: (B, T, D) embeddings of the new tokens.
            attention_mask: (B, S) 1 where a key may be attended, over cached and new positions.
            position_ids: (B|1, T); default: counting on from the cached positions.
            memory, memory_mask: (B, S', D) encoder output and its (B, S') padding mask.
        Returns:
            (B, T, D) hidden states.
        """
        T = token_embeds.shape[1]
        position_ids, key_positions = self._positions(position_ids, T, cache, token_embeds.device)
        ctx = ForwardContext(
            mask=self._self_mask(position_ids, key_positions, attention_mask, token_embeds),
            rotary=self.positions.rotary(position_ids),
            cache=cache,
            memory=memory,
            memory_mask=self._cross_mask(memory_mask, T, token_embeds),
            unpadded=self._unpadded_layout(attention_mask, cache),
        )
        x = self.embed(token_embeds, position_ids, segment_ids)
        if ctx.unpadded is not None:
            x = ctx.unpadded.unpad(x)
        for block in self.blocks:
            x = self._run_block(block, x, ctx)
        if cache is not None:
            cache.advance(T)
        x = x if self.final_norm is None else self.final_dropout(self.final_norm(x))
        return x if ctx.unpadded is None else ctx.unpadded.pad(x)

    def _run_block(
        self, block: TransformerBlock, x: torch.Tensor, ctx: ForwardContext
    ) -> torch.Tensor:
        """block(x, ctx), checkpointed when that is asked for and a backward pass will follow."""
        if not (self.activation_checkpointing and self.training and torch.is_grad_enabled()):
            return block(x, ctx)
        # A KV cache is written during the forward pass: a recomputation would append twice.
        assert ctx.cache is None, "activation checkpointing is for training, without a KV cache"
        # use_reentrant=False: the variant torch recommends (works with keyword arguments, inputs
        # that need no grad, torch.compile and FSDP2). preserve_rng_state=True: the recomputation
        # draws the same dropout masks as the forward pass, so gradients do not change.
        return checkpoint(block, x, ctx, use_reentrant=False, preserve_rng_state=True)

    @staticmethod
    def _positions(
        position_ids: torch.Tensor | None, T: int, cache: KVCache | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Position ids of the new queries, (B|1, T), counting on from the cache unless given,
        and of all keys, (B|1, S): with a cache, the new ones are recorded after the cached ones
        (the cache advances past them once every layer has stored its keys)."""
        past = 0 if cache is None else cache.length
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=device)[None]
        if cache is None:
            return position_ids, position_ids
        return position_ids, cache.store_positions(position_ids)

    def _self_mask(
        self,
        position_ids: torch.Tensor,
        key_positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        like: torch.Tensor,
    ) -> AttentionMask:
        """The causal rule, key padding and the positional score bias (hook 3) in one additive
        mask (B|1, H|1, T, S); no tensor where SDPA's own causal or unmasked path applies."""
        return build_attention_mask(
            query_len=position_ids.shape[1],
            key_len=key_positions.shape[1],
            is_causal=self.is_causal,
            key_padding=attention_mask,
            score_bias=self.positions.score_bias(position_ids, key_positions),
            dtype=like.dtype,
            device=like.device,
        )

    def _cross_mask(
        self, memory_mask: torch.Tensor | None, T: int, like: torch.Tensor
    ) -> AttentionMask | None:
        """The (B, 1, T, S') padding mask over the encoder output; None without cross-attention."""
        if not self.has_cross_attention:
            return None
        if memory_mask is None:
            return AttentionMask(None, False)
        return build_attention_mask(
            query_len=T,
            key_len=memory_mask.shape[1],
            is_causal=False,
            key_padding=memory_mask,
            score_bias=None,
            dtype=like.dtype,
            device=like.device,
        )

    def _unpadded_layout(
        self, attention_mask: torch.Tensor | None, cache: KVCache | None
    ) -> Unpadded | None:
        """Whether the blocks run on the real tokens only (padding removal), and where those sit.

        The blocks allow it where only self-attention needs the (B, T) layout: not with a KV cache
        (it stores (B, T) keys) nor with cross-attention. Whether it pays for this batch is
        `Unpadded.of`'s choice (kernels/unpadding.py).
        """
        if attention_mask is None or cache is not None or self.has_cross_attention:
            return None
        return Unpadded.of(attention_mask)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn activation checkpointing of every stack in `model` on or off; return the model. Call it
    before wrapping (DDP, FSDP, torch.compile)."""
    for module in model.modules():
        if isinstance(module, Stack):
            module.activation_checkpointing = enabled
    return model


def _dropout(rate: float | None) -> nn.Module:
    """Dropout at `rate`; an identity where the model type has no dropout site (rate None)."""
    return nn.Identity() if rate is None else nn.Dropout(rate)
