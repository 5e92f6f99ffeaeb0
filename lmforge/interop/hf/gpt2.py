"""GPT-2 <-> Hugging Face `GPT2LMHeadModel` (model_type "gpt2").

Layout quirk: GPT-2's projections are `Conv1D` modules whose weights are stored (in, out), the
transpose of `nn.Linear`'s (out, in) (Radford et al.'s TensorFlow release, kept by HF). The fused
`c_attn` output is [q; k; v] with heads contiguous inside each part, as our `qkv_proj`, so only the
transpose is needed. Checkpoints saved from the bare `GPT2Model` (e.g. openai-community/gpt2) lack
the "transformer." prefix and carry causal-mask buffers (`attn.bias`, `attn.masked_bias`);
the loader adds the prefix and the engine ignores the buffers.
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
from lmforge.interop.hf.convert import TRANSPOSE, require_fields, token_ids_from_hf, token_ids_to_hf

MODEL_TYPE = "gpt2"
BASE_PREFIX = "transformer."
"""Prefix of the body's weights inside the LM-head model."""

KEY_MAP = {
    "token_embed.weight": "transformer.wte.weight",
    "decoder.positions.table.weight": "transformer.wpe.weight",
    "decoder.blocks.{i}.self_attn_norm.weight": "transformer.h.{i}.ln_1.weight",
    "decoder.blocks.{i}.self_attn_norm.bias": "transformer.h.{i}.ln_1.bias",
    "decoder.blocks.{i}.self_attn.qkv_proj.weight": "transformer.h.{i}.attn.c_attn.weight",
    "decoder.blocks.{i}.self_attn.qkv_proj.bias": "transformer.h.{i}.attn.c_attn.bias",
    "decoder.blocks.{i}.self_attn.out_proj.weight": "transformer.h.{i}.attn.c_proj.weight",
    "decoder.blocks.{i}.self_attn.out_proj.bias": "transformer.h.{i}.attn.c_proj.bias",
    "decoder.blocks.{i}.mlp_norm.weight": "transformer.h.{i}.ln_2.weight",
    "decoder.blocks.{i}.mlp_norm.bias": "transformer.h.{i}.ln_2.bias",
    "decoder.blocks.{i}.mlp.up_proj.weight": "transformer.h.{i}.mlp.c_fc.weight",
    "decoder.blocks.{i}.mlp.up_proj.bias": "transformer.h.{i}.mlp.c_fc.bias",
    "decoder.blocks.{i}.mlp.down_proj.weight": "transformer.h.{i}.mlp.c_proj.weight",
    "decoder.blocks.{i}.mlp.down_proj.bias": "transformer.h.{i}.mlp.c_proj.bias",
    "decoder.final_norm.weight": "transformer.ln_f.weight",
    "decoder.final_norm.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",  # untied models only; tied ones have no such parameter
}

TRANSFORMS = {
    "decoder.blocks.{i}.self_attn.qkv_proj.weight": TRANSPOSE,
    "decoder.blocks.{i}.self_attn.out_proj.weight": TRANSPOSE,
    "decoder.blocks.{i}.mlp.up_proj.weight": TRANSPOSE,
    "decoder.blocks.{i}.mlp.down_proj.weight": TRANSPOSE,
}

TIED_HF_KEY = "lm_head.weight"
IGNORED_HF_KEYS = (r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",)
TASK_HEADS = {
    # The score layer reads the last non-pad token, as our classifier the last real one; it has
    # no bias (see task_models.py for what that means for a head with one).
    "sequence": ("GPT2ForSequenceClassification", {"head.proj": "score"}),
    "token": ("GPT2ForTokenClassification", {"head.proj": "classifier"}),
}
"""Task-model kind -> (transformers class, our module -> theirs); see task_models.py."""

# HF activation names -> ours. "gelu_new" is GPT-2's tanh approximation.
_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def hf_model_class() -> type:
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.GPT2Config`; options we do not implement are errors."""
    if hf_config.activation_function not in _ACTIVATIONS:
        raise LmforgeError(
            f"GPT-2 activation_function {hf_config.activation_function!r} is not supported; "
            f"supported: {', '.join(_ACTIVATIONS)}"
        )
    unsupported = {
        "scale_attn_weights": (hf_config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (hf_config.scale_attn_by_inverse_layer_idx, False),
        "add_cross_attention": (hf_config.add_cross_attention, False),
    }
    for name, (value, supported) in unsupported.items():
        if bool(value) != supported:
            raise LmforgeError(f"GPT-2 config {name}={value} is not supported (need {supported})")
    return ModelConfig(
        family="decoder",
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.n_embd,
        num_heads=hf_config.n_head,
        num_layers=hf_config.n_layer,
        d_ff=hf_config.n_inner or 4 * hf_config.n_embd,
        norm=NormConfig(kind="layernorm", placement="pre", eps=hf_config.layer_norm_epsilon),
        position=PositionConfig(kind="learned", max_positions=hf_config.n_positions),
        mlp=MLPConfig(activation=_ACTIVATIONS[hf_config.activation_function]),
        attention=AttentionConfig(score_scale="inverse_sqrt", dropout=hf_config.attn_pdrop),
        embedding=EmbeddingConfig(norm=False, dropout=hf_config.embd_pdrop),
        tokens=token_ids_from_hf(hf_config),
        tie_word_embeddings=hf_config.tie_word_embeddings,
        dropout=hf_config.resid_pdrop,
        init_std=hf_config.initializer_range,
    )


# What a GPT-2 checkpoint can represent (dotted ModelConfig fields).
REQUIRED = {
    "family": "decoder",
    "norm.kind": "layernorm",
    "norm.placement": "pre",
    "norm.bias": True,
    "position.kind": "learned",
    "position.offset": 0,
    "embedding.norm": False,
    "embedding.num_segment_types": 0,
    "embedding.scale": "none",
    "mlp.gated": False,
    "mlp.bias": True,
    "attention.bias": True,
    "attention.score_scale": "inverse_sqrt",
    "attention.num_kv_heads": None,  # one key/value head per query head
    "head.kind": "linear",
    "head.bias": "none",
    "head.logit_scale": "none",
}


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.GPT2Config` describing `cfg`."""
    from transformers import GPT2Config

    require_fields(cfg, REQUIRED, "GPT-2")
    activation = {"gelu_tanh": "gelu_new"}.get(cfg.mlp.activation, cfg.mlp.activation)
    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.position.max_positions,
        n_embd=cfg.d_model,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.d_ff,
        activation_function=activation,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.embedding.dropout,
        attn_pdrop=cfg.attention.dropout,
        layer_norm_epsilon=cfg.norm.eps,
        initializer_range=cfg.init_std,
        tie_word_embeddings=cfg.tie_word_embeddings,
        **token_ids_to_hf(cfg),
    )
