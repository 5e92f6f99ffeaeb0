"""Llama <-> Hugging Face `LlamaForCausalLM` (model_type "llama").

Llama (Touvron et al. 2023) is a pre-norm decoder with RMSNorm, rotary positions, a SiLU-gated
feed-forward and no biases; TinyLlama and SmolLM share its checkpoint layout. Layout: HF keeps
q_proj, k_proj and v_proj apart; ours fuses them into `qkv_proj` ([q; k; v] rows, heads contiguous
inside each), or, with grouped-query attention (num_key_value_heads < num_attention_heads), into
`q_proj` and a fused `kv_proj` ([k; v]). Rotary positions are computed, not stored: HF's
`rotate_half` pairs dimension j with j + Dh/2 and its frequencies are theta^(-2j/Dh), which is what
`layers.positions.apply_rotary` does, so no permutation of the q/k rows is needed (that permutation
exists only between Meta's original checkpoints and HF's). Checkpoints saved from the bare
`LlamaModel` lack the "model." prefix; the loader adds it. Older checkpoints store
`rotary_emb.inv_freq` buffers, which are ignored.

Texts are framed as for every lmforge decoder, without the <s> that meta-llama's tokenizer puts
first (see interop/hf/tokenizer.py). Llama has no residual or embedding dropout: a model fine-tuned
with dropout exports its weights unchanged, and the HF config keeps only the attention dropout.
"""

from __future__ import annotations

from typing import Any

from lmforge.config.model import (
    AttentionConfig,
    EmbeddingConfig,
    MLPConfig,
    ModelConfig,
    NormConfig,
    PositionConfig,
)
from lmforge.errors import LmforgeError
from lmforge.interop.hf.convert import require_fields, token_ids_from_hf, token_ids_to_hf

MODEL_TYPE = "llama"
BASE_PREFIX = "model."
"""Prefix of the body's weights inside the LM-head model."""

_LAYER = "model.layers.{i}."
_ATTENTION = "decoder.blocks.{i}.self_attn."


def _projections(ours: str, theirs: tuple[str, ...]) -> dict[str, str | tuple[str, ...]]:
    """Weight and bias entries of one of our projections onto HF attention projections."""
    return {
        f"{_ATTENTION}{ours}.{kind}": tuple(f"{_LAYER}self_attn.{t}.{kind}" for t in theirs)
        for kind in ("weight", "bias")
    }


KEY_MAP: dict[str, str | tuple[str, ...]] = {
    "token_embed.weight": "model.embed_tokens.weight",
    "decoder.blocks.{i}.self_attn_norm.weight": f"{_LAYER}input_layernorm.weight",
    # Multi-head attention: one fused matrix; grouped-query attention: queries, then keys/values.
    **_projections("qkv_proj", ("q_proj", "k_proj", "v_proj")),
    **_projections("q_proj", ("q_proj",)),
    **_projections("kv_proj", ("k_proj", "v_proj")),
    **_projections("out_proj", ("o_proj",)),
    "decoder.blocks.{i}.mlp_norm.weight": f"{_LAYER}post_attention_layernorm.weight",
    **{
        f"decoder.blocks.{{i}}.mlp.{name}.{kind}": f"{_LAYER}mlp.{name}.{kind}"
        for name in ("gate_proj", "up_proj", "down_proj")
        for kind in ("weight", "bias")
    },
    "decoder.final_norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",  # untied models only; tied ones have no such parameter
}

TRANSFORMS: dict = {}
TIED_HF_KEY = "lm_head.weight"
IGNORED_HF_KEYS = (r"model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq",)
TASK_HEADS = {
    # As GPT-2's: the score layer reads the last non-pad token and has no bias. The token
    # classifier (transformers' generic one) is also called `score`, with a bias.
    # LlamaForQuestionAnswering names its body "transformer.", not "model.", so span heads do
    # not export.
    "sequence": ("LlamaForSequenceClassification", {"head.proj": "score"}),
    "token": ("LlamaForTokenClassification", {"head.proj": "score"}),
}
"""Task-model kind -> (transformers class, our module -> theirs); see task_models.py."""

# HF activation names -> ours.
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "relu": "relu",
                "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}  # fmt: skip

# What a Llama checkpoint can represent (dotted ModelConfig fields).
REQUIRED = {
    "family": "decoder",
    "norm.kind": "rmsnorm",
    "norm.placement": "pre",
    "position.kind": "rope",
    "embedding.norm": False,
    "embedding.num_segment_types": 0,
    "embedding.scale": "none",
    "mlp.gated": True,
    "attention.score_scale": "inverse_sqrt",
    "head.kind": "linear",
    "head.bias": "none",
    "head.logit_scale": "none",
}


def hf_model_class() -> type:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM


def _rope_theta(hf_config: Any) -> float:
    """rope_theta of plain rotary positions; scaled variants (Llama 3.1's "llama3", "linear",
    "dynamic", "yarn") change the frequencies and are refused."""
    parameters = getattr(hf_config, "rope_parameters", None) or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type != "default":
        raise LmforgeError(
            f"Llama rope_type {rope_type!r} is not supported; only plain rotary positions "
            "(rope_type 'default') convert"
        )
    return float(parameters.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)))


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.LlamaConfig`; options we do not implement are errors."""
    if hf_config.hidden_act not in _ACTIVATIONS:
        raise LmforgeError(
            f"Llama hidden_act {hf_config.hidden_act!r} is not supported; "
            f"supported: {', '.join(_ACTIVATIONS)}"
        )
    d_model, num_heads = hf_config.hidden_size, hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or d_model // num_heads
    num_kv_heads = hf_config.num_key_value_heads or num_heads
    # None where the value is the default, so that ours -> HF -> ours gives back an equal config.
    attention = AttentionConfig(
        score_scale="inverse_sqrt",
        bias=hf_config.attention_bias,
        dropout=hf_config.attention_dropout,
        head_dim=None if head_dim * num_heads == d_model else head_dim,
        num_kv_heads=None if num_kv_heads == num_heads else num_kv_heads,
    )
    return ModelConfig(
        family="decoder",
        vocab_size=hf_config.vocab_size,
        d_model=d_model,
        num_heads=num_heads,
        num_layers=hf_config.num_hidden_layers,
        d_ff=hf_config.intermediate_size,
        norm=NormConfig(kind="rmsnorm", placement="pre", eps=hf_config.rms_norm_eps, bias=False),
        position=PositionConfig(
            kind="rope",
            max_positions=hf_config.max_position_embeddings,
            rope_theta=_rope_theta(hf_config),
        ),
        mlp=MLPConfig(
            activation=_ACTIVATIONS[hf_config.hidden_act], gated=True, bias=hf_config.mlp_bias
        ),
        attention=attention,
        embedding=EmbeddingConfig(norm=False, dropout=None),
        tokens=token_ids_from_hf(hf_config),
        tie_word_embeddings=hf_config.tie_word_embeddings,
        init_std=hf_config.initializer_range,
    )


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.LlamaConfig` describing `cfg`."""
    from transformers import LlamaConfig

    require_fields(cfg, REQUIRED, "Llama")
    activation = {"gelu_tanh": "gelu_pytorch_tanh"}.get(cfg.mlp.activation, cfg.mlp.activation)
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.d_head,
        hidden_act=activation,
        max_position_embeddings=cfg.position.max_positions,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm.eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.position.rope_theta},
        attention_bias=cfg.attention.bias,
        attention_dropout=cfg.attention.dropout,
        mlp_bias=cfg.mlp.bias,
        tie_word_embeddings=cfg.tie_word_embeddings,
        **token_ids_to_hf(cfg),
    )
