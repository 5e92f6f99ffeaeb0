"""BLOOM <-> Hugging Face `BloomForCausalLM` (model_type "bloom").

Layout quirk: BLOOM's fused `query_key_value` output is interleaved per head: HF views it as
(B, T, H, 3, Dh), so the weight's 3D rows are ordered (H, 3, Dh) (Megatron-DeepSpeed's layout). Our
`qkv_proj` rows are [q; k; v] with heads contiguous inside each, i.e. (3, H, Dh). The transform
permutes the rows (weight and bias alike). ALiBi slopes are computed, not stored. The MLP is
always 4 x hidden_size wide, and there is no embedding dropout. Checkpoints saved from the bare
`BloomModel` (e.g. bigscience/bloom-560m) lack the "transformer." prefix; the loader adds it.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.config.model import (
    AttentionConfig,
    EmbeddingConfig,
    MLPConfig,
    ModelConfig,
    NormConfig,
    PositionConfig,
)
from lmforge.errors import LmforgeError
from lmforge.interop.hf.convert import Transform, require_fields, token_ids_from_hf, token_ids_to_hf

MODEL_TYPE = "bloom"
BASE_PREFIX = "transformer."


def _heads_to_parts(tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """HF rows (H, 3, Dh) -> ours (3, H, Dh); tensor: (3D, ...) with any trailing dims."""
    rest = tensor.shape[1:]
    grouped = tensor.reshape(cfg.num_heads, 3, cfg.d_head, *rest)  # (H, 3, Dh, ...)
    return grouped.transpose(0, 1).reshape(3 * cfg.d_model, *rest)


def _parts_to_heads(tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Ours (3, H, Dh) -> HF rows (H, 3, Dh)."""
    rest = tensor.shape[1:]
    grouped = tensor.reshape(3, cfg.num_heads, cfg.d_head, *rest)  # (3, H, Dh, ...)
    return grouped.transpose(0, 1).reshape(3 * cfg.d_model, *rest)


# Interleaved-per-head fused qkv <-> [q; k; v].
QKV_PER_HEAD = Transform("qkv_per_head", _heads_to_parts, _parts_to_heads)

KEY_MAP = {
    "token_embed.weight": "transformer.word_embeddings.weight",
    "decoder.embed_norm.weight": "transformer.word_embeddings_layernorm.weight",
    "decoder.embed_norm.bias": "transformer.word_embeddings_layernorm.bias",
    "decoder.blocks.{i}.self_attn_norm.weight": "transformer.h.{i}.input_layernorm.weight",
    "decoder.blocks.{i}.self_attn_norm.bias": "transformer.h.{i}.input_layernorm.bias",
    "decoder.blocks.{i}.self_attn.qkv_proj.weight": (
        "transformer.h.{i}.self_attention.query_key_value.weight"
    ),
    "decoder.blocks.{i}.self_attn.qkv_proj.bias": (
        "transformer.h.{i}.self_attention.query_key_value.bias"
    ),
    "decoder.blocks.{i}.self_attn.out_proj.weight": "transformer.h.{i}.self_attention.dense.weight",
    "decoder.blocks.{i}.self_attn.out_proj.bias": "transformer.h.{i}.self_attention.dense.bias",
    "decoder.blocks.{i}.mlp_norm.weight": "transformer.h.{i}.post_attention_layernorm.weight",
    "decoder.blocks.{i}.mlp_norm.bias": "transformer.h.{i}.post_attention_layernorm.bias",
    "decoder.blocks.{i}.mlp.up_proj.weight": "transformer.h.{i}.mlp.dense_h_to_4h.weight",
    "decoder.blocks.{i}.mlp.up_proj.bias": "transformer.h.{i}.mlp.dense_h_to_4h.bias",
    "decoder.blocks.{i}.mlp.down_proj.weight": "transformer.h.{i}.mlp.dense_4h_to_h.weight",
    "decoder.blocks.{i}.mlp.down_proj.bias": "transformer.h.{i}.mlp.dense_4h_to_h.bias",
    "decoder.final_norm.weight": "transformer.ln_f.weight",
    "decoder.final_norm.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",  # untied models only; tied ones have no such parameter
}

TRANSFORMS = {
    "decoder.blocks.{i}.self_attn.qkv_proj.weight": QKV_PER_HEAD,
    "decoder.blocks.{i}.self_attn.qkv_proj.bias": QKV_PER_HEAD,
}

TIED_HF_KEY = "lm_head.weight"
IGNORED_HF_KEYS: tuple[str, ...] = ()
TASK_HEADS = {
    "sequence": ("BloomForSequenceClassification", {"head.proj": "score"}),  # as GPT-2's
    "token": ("BloomForTokenClassification", {"head.proj": "classifier"}),
}
"""Task-model kind -> (transformers class, our module -> theirs); see task_models.py."""

# What a BLOOM checkpoint can represent (dotted ModelConfig fields).
REQUIRED = {
    "family": "decoder",
    "norm.kind": "layernorm",
    "norm.placement": "pre",
    "norm.bias": True,
    "position.kind": "alibi",
    "embedding.norm": True,
    "embedding.num_segment_types": 0,
    "embedding.scale": "none",
    "embedding.dropout": None,
    "mlp.activation": "gelu_tanh",
    "mlp.gated": False,
    "mlp.bias": True,
    "attention.bias": True,
    "attention.score_scale": "inverse_sqrt",
    "attention.num_kv_heads": None,  # one key/value head per query head
    "head.kind": "linear",
    "head.bias": "none",
    "head.logit_scale": "none",
}


def hf_model_class() -> type:
    from transformers import BloomForCausalLM

    return BloomForCausalLM


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.BloomConfig`; options we do not implement are errors."""
    if hf_config.apply_residual_connection_post_layernorm:
        raise LmforgeError(
            "BLOOM config apply_residual_connection_post_layernorm=true is not supported"
        )
    # pretraining_tp / slow_but_exact only split the same matmuls into slices: same function.
    return ModelConfig(
        family="decoder",
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        num_heads=hf_config.n_head,
        num_layers=hf_config.n_layer,
        d_ff=4 * hf_config.hidden_size,
        norm=NormConfig(kind="layernorm", placement="pre", eps=hf_config.layer_norm_epsilon),
        position=PositionConfig(kind="alibi"),
        mlp=MLPConfig(activation="gelu_tanh"),
        attention=AttentionConfig(score_scale="inverse_sqrt", dropout=hf_config.attention_dropout),
        embedding=EmbeddingConfig(norm=True, dropout=None),
        tokens=token_ids_from_hf(hf_config),
        tie_word_embeddings=hf_config.tie_word_embeddings,
        dropout=hf_config.hidden_dropout,
        init_std=hf_config.initializer_range,
    )


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.BloomConfig` describing `cfg`."""
    from transformers import BloomConfig

    require_fields(cfg, {**REQUIRED, "d_ff": 4 * cfg.d_model}, "BLOOM")
    return BloomConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        layer_norm_epsilon=cfg.norm.eps,
        initializer_range=cfg.init_std,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention.dropout,
        tie_word_embeddings=cfg.tie_word_embeddings,
        **token_ids_to_hf(cfg),
    )
