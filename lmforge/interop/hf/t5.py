"""T5 <-> Hugging Face `T5ForConditionalGeneration` (model_type "t5"), v1.1 and v1.0.

Layout quirks: separate q, k, v (self-attention) and k, v (cross-attention) projections, which our
fused `qkv_proj` / `kv_proj` concatenate; the relative position bias of each stack is stored in its
first layer's self-attention (`block.0.layer.0.SelfAttention.relative_attention_bias`), and we keep
it on the stack (`positions.table`), computed once per forward pass. The gated MLP (v1.1,
"gated-gelu") is act(wi_0 x) * (wi_1 x) -> our gate_proj / up_proj; the dense one (v1.0, "relu")
has a single wi -> up_proj, so the key map depends on the config (`key_map(cfg)`).

transformers 5 always ties `lm_head` to `shared` in a freshly built model and reads the old
`tie_word_embeddings` flag only to decide whether to rescale the decoder output by d_model^-1/2
(`scale_decoder_outputs`: v1.0 yes, v1.1 no). We map v1.1 (unscaled) to an untied head and v1.0
(scaled) to a tied head with `head.logit_scale = "inverse_sqrt_d_model"`. On export an untied head
is given its own parameter (`prepare_hf_model`) and config.json says tie_word_embeddings=false, as
the original v1.1 checkpoints do, so that transformers loads the separate `lm_head.weight`.

T5's attention has d_kv * num_heads inner width, which may differ from d_model (t5-v1_1-small:
6 x 64 = 384 < 512): it becomes `attention.head_dim` then. Imported configs select T5's own
initialisation (`init="t5"`) for when they are trained from scratch.
"""

from __future__ import annotations

from typing import Any

import torch

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
from lmforge.interop.hf.convert import (
    mismatched_fields,
    require_fields,
    token_ids_from_hf,
    token_ids_to_hf,
)

MODEL_TYPE = "t5"
BASE_PREFIX = ""
TRANSFORMS: dict = {}
TIED_HF_KEY = "lm_head.weight"
ALIASES = {
    "encoder.embed_tokens.weight": "shared.weight",
    "decoder.embed_tokens.weight": "shared.weight",
}
FALLBACKS = {"lm_head.weight": "shared.weight"}
"""A v1.1 model built by transformers 5 has its head tied anyway and saves only shared.weight."""
# Old checkpoints carry an unused relative bias in the decoder's first cross-attention.
IGNORED_HF_KEYS = (
    r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",
)


def key_map(cfg: ModelConfig) -> dict[str, str | tuple[str, ...]]:
    keys: dict[str, str | tuple[str, ...]] = {
        "token_embed.weight": "shared.weight",
        "lm_head.weight": "lm_head.weight",  # untied (v1.1) only
    }
    for stack in ("encoder", "decoder"):
        theirs, ours = f"{stack}.block.{{i}}.layer.", f"{stack}.blocks.{{i}}."
        attn = theirs + "0.SelfAttention."
        keys |= {
            f"{stack}.positions.table.weight": (
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ),
            f"{stack}.final_norm.weight": f"{stack}.final_layer_norm.weight",
            f"{ours}self_attn_norm.weight": theirs + "0.layer_norm.weight",
            f"{ours}self_attn.qkv_proj.weight": (
                attn + "q.weight",
                attn + "k.weight",
                attn + "v.weight",
            ),
            f"{ours}self_attn.out_proj.weight": attn + "o.weight",
        }
        mlp = theirs + ("2" if stack == "decoder" else "1")
        keys |= {
            f"{ours}mlp_norm.weight": mlp + ".layer_norm.weight",
            f"{ours}mlp.down_proj.weight": mlp + ".DenseReluDense.wo.weight",
        }
        if cfg.mlp.gated:
            keys[f"{ours}mlp.gate_proj.weight"] = mlp + ".DenseReluDense.wi_0.weight"
            keys[f"{ours}mlp.up_proj.weight"] = mlp + ".DenseReluDense.wi_1.weight"
        else:
            keys[f"{ours}mlp.up_proj.weight"] = mlp + ".DenseReluDense.wi.weight"
    cross = "decoder.block.{i}.layer.1.EncDecAttention."
    keys |= {
        "decoder.blocks.{i}.cross_attn_norm.weight": "decoder.block.{i}.layer.1.layer_norm.weight",
        "decoder.blocks.{i}.cross_attn.q_proj.weight": cross + "q.weight",
        "decoder.blocks.{i}.cross_attn.kv_proj.weight": (cross + "k.weight", cross + "v.weight"),
        "decoder.blocks.{i}.cross_attn.out_proj.weight": cross + "o.weight",
    }
    return keys


_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                "relu": "relu", "silu": "silu"}  # fmt: skip

REQUIRED = {
    "family": "encoder_decoder",
    "norm.kind": "rmsnorm",
    "norm.placement": "pre",
    "position.kind": "relative_bias",
    "embedding.norm": False,
    "embedding.num_segment_types": 0,
    "embedding.scale": "none",
    "mlp.bias": False,
    "attention.bias": False,
    "attention.score_scale": "none",
    "attention.num_kv_heads": None,  # one key/value head per query head
    "head.kind": "linear",
    "head.bias": "none",
}


def hf_model_class() -> type:
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.T5Config`; options we do not implement are errors."""
    if hf_config.dense_act_fn not in _ACTIVATIONS:
        raise LmforgeError(f"T5 activation {hf_config.dense_act_fn!r} is not supported")
    scaled = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
    narrow_heads = hf_config.d_model - hf_config.d_kv * hf_config.num_heads
    return ModelConfig(
        init="t5",
        family="encoder_decoder",
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.d_model,
        num_heads=hf_config.num_heads,
        num_layers=hf_config.num_layers,
        num_decoder_layers=hf_config.num_decoder_layers,
        d_ff=hf_config.d_ff,
        norm=NormConfig(
            kind="rmsnorm",
            placement="pre",
            eps=hf_config.layer_norm_epsilon,
            bias=False,
            final_dropout=hf_config.dropout_rate,
        ),
        position=PositionConfig(
            kind="relative_bias",
            num_buckets=hf_config.relative_attention_num_buckets,
            max_distance=hf_config.relative_attention_max_distance,
        ),
        mlp=MLPConfig(
            activation=_ACTIVATIONS[hf_config.dense_act_fn],
            gated=hf_config.is_gated_act,
            bias=False,
            dropout=hf_config.dropout_rate,
        ),  # fmt: skip
        attention=AttentionConfig(
            score_scale="none",
            bias=False,
            dropout=hf_config.dropout_rate,
            # Heads narrower than d_model / num_heads (t5-v1_1-small: 6 x 64 on 512).
            head_dim=None if narrow_heads == 0 else hf_config.d_kv,
        ),
        embedding=EmbeddingConfig(dropout=hf_config.dropout_rate),
        head=HeadConfig(logit_scale="inverse_sqrt_d_model" if scaled else "none"),
        tokens=token_ids_from_hf(hf_config),
        tie_word_embeddings=bool(scaled),
        dropout=hf_config.dropout_rate,
        default_objective="span_corruption",  # what continued pretraining uses, as the t5-* presets
    )


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.T5Config` describing `cfg`."""
    from transformers import T5Config

    require_fields(cfg, REQUIRED, "T5")
    scale = "inverse_sqrt_d_model" if cfg.tie_word_embeddings else "none"
    wrong = mismatched_fields(cfg, {"head.logit_scale": scale}, "T5 with this tying")
    if wrong or cfg.attention.dropout != cfg.dropout:
        raise LmforgeError(
            "this model cannot be exported as T5: a tied head needs "
            "head.logit_scale=inverse_sqrt_d_model and an untied one none, and T5 has one dropout "
            f"rate for attention and residuals ({', '.join(wrong) or 'dropout rates differ'})"
        )
    activation = {"gelu_tanh": "gelu_new"}.get(cfg.mlp.activation, cfg.mlp.activation)
    feed_forward = ("gated-" if cfg.mlp.gated else "") + activation
    # google/t5-v1_1-* spell gated gelu_new "gated-gelu" (transformers reads it so): exports too.
    feed_forward = {"gated-gelu_new": "gated-gelu"}.get(feed_forward, feed_forward)
    return T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_head,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers or cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.position.num_buckets,
        relative_attention_max_distance=cfg.position.max_distance,
        dropout_rate=cfg.dropout,
        layer_norm_epsilon=cfg.norm.eps,
        feed_forward_proj=feed_forward,
        tie_word_embeddings=cfg.tie_word_embeddings,
        **token_ids_to_hf(cfg),
    )


def prepare_hf_model(model: Any, cfg: ModelConfig) -> None:
    """Give an untied model its own lm_head parameter (transformers 5 ties it at construction)."""
    if not cfg.tie_word_embeddings:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())


def fix_saved_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json as the original checkpoints write it: v1.1 (unscaled) is untied."""
    if config.get("scale_decoder_outputs") is False:
        config["tie_word_embeddings"] = False
    return config
