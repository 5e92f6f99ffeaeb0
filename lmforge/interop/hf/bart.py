"""BART <-> Hugging Face `BartForConditionalGeneration` (model_type "bart").

Layout quirks: separate q/k/v (and cross-attention k/v) projections, concatenated into our fused
ones; one embedding matrix stored four times (`model.shared`, each stack's `embed_tokens`, the tied
`lm_head`); the output bias is a (1, V) buffer `final_logits_bias` -> our (V,) `lm_head.bias`.
Positions are learned with the first two rows reserved (offset 2, fairseq's legacy), counted from 0
in each stack regardless of padding, as ours. Post-norm, with a norm after the embeddings, and
embeddings multiplied by sqrt(d_model) when `scale_embedding` is set.

Not represented: `activation_dropout` (dropout after the MLP activation; training only, so logits
are unaffected) and `encoder_layerdrop` / `decoder_layerdrop`; they are dropped on import. Encoder
and decoder must have the same heads and MLP width.
"""

from __future__ import annotations

from typing import Any

from lmforge.config.model import (
    AttentionConfig,
    EmbeddingConfig,
    HeadConfig,
    MLPConfig,
    ModelConfig,
    NormConfig,
    PositionConfig,
)
from lmforge.errors import LmforgeError
from lmforge.interop.hf.convert import Transform, require_fields, token_ids_from_hf, token_ids_to_hf

MODEL_TYPE = "bart"
BASE_PREFIX = "model."
HEAD_PREFIXES = ("lm_head.", "final_logits_bias")

# (1, V) buffer <-> (V,) parameter.
ROW = Transform("row", lambda t, cfg: t.reshape(-1), lambda t, cfg: t.reshape(1, -1))


def _key_map() -> dict[str, str | tuple[str, ...]]:
    keys: dict[str, str | tuple[str, ...]] = {
        "token_embed.weight": "model.shared.weight",
        "lm_head.bias": "final_logits_bias",
    }
    for stack in ("encoder", "decoder"):
        theirs, ours = f"model.{stack}.layers.{{i}}.", f"{stack}.blocks.{{i}}."
        keys[f"{stack}.positions.table.weight"] = f"model.{stack}.embed_positions.weight"
        for part in ("weight", "bias"):
            keys |= {
                f"{stack}.embed_norm.{part}": f"model.{stack}.layernorm_embedding.{part}",
                f"{ours}self_attn.qkv_proj.{part}": tuple(
                    f"{theirs}self_attn.{p}_proj.{part}" for p in "qkv"
                ),
                f"{ours}self_attn.out_proj.{part}": f"{theirs}self_attn.out_proj.{part}",
                f"{ours}self_attn_norm.{part}": f"{theirs}self_attn_layer_norm.{part}",
                f"{ours}mlp.up_proj.{part}": f"{theirs}fc1.{part}",
                f"{ours}mlp.down_proj.{part}": f"{theirs}fc2.{part}",
                f"{ours}mlp_norm.{part}": f"{theirs}final_layer_norm.{part}",
            }
    cross, ours = "model.decoder.layers.{i}.encoder_attn", "decoder.blocks.{i}.cross_attn"
    for part in ("weight", "bias"):
        keys |= {
            f"{ours}.q_proj.{part}": f"{cross}.q_proj.{part}",
            f"{ours}.kv_proj.{part}": (f"{cross}.k_proj.{part}", f"{cross}.v_proj.{part}"),
            f"{ours}.out_proj.{part}": f"{cross}.out_proj.{part}",
            f"{ours}_norm.{part}": f"{cross}_layer_norm.{part}",
        }
    return keys


KEY_MAP = _key_map()
TRANSFORMS = {"lm_head.bias": ROW}
TIED_HF_KEY = "lm_head.weight"
ALIASES = {
    "model.encoder.embed_tokens.weight": "model.shared.weight",
    "model.decoder.embed_tokens.weight": "model.shared.weight",
}
IGNORED_HF_KEYS: tuple[str, ...] = ()

REQUIRED = {
    "family": "encoder_decoder",
    "norm.kind": "layernorm",
    "norm.placement": "post",
    "norm.bias": True,
    "norm.eps": 1e-5,
    "position.kind": "learned",
    "position.offset": 2,
    "embedding.norm": True,
    "embedding.num_segment_types": 0,
    "mlp.gated": False,
    "mlp.bias": True,
    "attention.bias": True,
    "attention.score_scale": "inverse_sqrt",
    "attention.num_kv_heads": None,  # one key/value head per query head
    "head.kind": "linear",
    "head.bias": "fixed",
    "head.logit_scale": "none",
    "tie_word_embeddings": True,
}

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu",
                "swish": "silu"}  # fmt: skip


def hf_model_class() -> type:
    from transformers import BartForConditionalGeneration

    return BartForConditionalGeneration


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.BartConfig`; options we do not implement are errors."""
    c = hf_config
    if (c.encoder_attention_heads, c.encoder_ffn_dim) != (c.decoder_attention_heads,
                                                          c.decoder_ffn_dim):  # fmt: skip
        raise LmforgeError(
            "BART encoder and decoder must have the same attention heads and ffn dim for lmforge"
        )
    if c.activation_function not in _ACTIVATIONS:
        raise LmforgeError(f"BART activation_function {c.activation_function!r} is not supported")
    if not c.tie_word_embeddings:
        raise LmforgeError("BART config tie_word_embeddings=false is not supported")
    return ModelConfig(
        family="encoder_decoder",
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        num_heads=c.encoder_attention_heads,
        num_layers=c.encoder_layers,
        num_decoder_layers=c.decoder_layers,
        d_ff=c.encoder_ffn_dim,
        norm=NormConfig(kind="layernorm", placement="post", eps=1e-5),
        position=PositionConfig(kind="learned", max_positions=c.max_position_embeddings, offset=2),
        mlp=MLPConfig(activation=_ACTIVATIONS[c.activation_function]),
        attention=AttentionConfig(dropout=c.attention_dropout),
        embedding=EmbeddingConfig(
            norm=True, scale="sqrt_d_model" if c.scale_embedding else "none", dropout=c.dropout
        ),
        head=HeadConfig(bias="fixed"),
        tokens=token_ids_from_hf(c),
        dropout=c.dropout,
        init_std=c.init_std,
        default_objective="bart_denoising",  # what continued pretraining uses, as bart-* presets
    )


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.BartConfig` describing `cfg`."""
    from transformers import BartConfig

    require_fields(cfg, REQUIRED, "BART")
    if cfg.embedding.dropout != cfg.dropout:
        raise LmforgeError(
            "this model cannot be exported as BART: BART has one dropout for embeddings and "
            f"residuals (model.embedding.dropout={cfg.embedding.dropout}, "
            f"model.dropout={cfg.dropout})"
        )
    activation = {"gelu_tanh": "gelu_new"}.get(cfg.mlp.activation, cfg.mlp.activation)
    return BartConfig(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        encoder_layers=cfg.num_layers,
        decoder_layers=cfg.num_decoder_layers or cfg.num_layers,
        encoder_attention_heads=cfg.num_heads,
        decoder_attention_heads=cfg.num_heads,
        encoder_ffn_dim=cfg.d_ff,
        decoder_ffn_dim=cfg.d_ff,
        activation_function=activation,
        max_position_embeddings=cfg.position.max_positions,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention.dropout,
        activation_dropout=0.0,
        init_std=cfg.init_std,
        scale_embedding=cfg.embedding.scale == "sqrt_d_model",
        forced_eos_token_id=None,
        **token_ids_to_hf(cfg),
    )
