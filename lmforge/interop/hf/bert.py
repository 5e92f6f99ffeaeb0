"""BERT <-> Hugging Face `BertForMaskedLM` (model_type "bert"); also the layout RoBERTa shares.

Layout quirks: HF keeps separate query, key and value projections; our `qkv_proj` is their rows
concatenated [q; k; v] (a tuple in `KEY_MAP`). BERT is post-norm: HF's `attention.output.LayerNorm`
follows self-attention (our `self_attn_norm`) and `output.LayerNorm` follows the MLP (our
`mlp_norm`). The MLM head's output bias is stored twice by HF (`cls.predictions.bias` and its tied
copy `cls.predictions.decoder.bias`).

The pooler (`bert.pooler.dense.*`, our `pooler.dense.*`) is in BertModel and BertForPreTraining
checkpoints (bert-base-uncased) but not in BertForMaskedLM, which is built with
add_pooling_layer=False: initialised fresh when a checkpoint lacks it (`OPTIONAL_HF_KEYS`), and
exported into model.safetensors beside the MLM weights, as bert-base-uncased holds it, so that
BertForSequenceClassification starts from our pooler (BertForMaskedLM reports it as unexpected, as
it does for bert-base-uncased). The next-sentence head (`cls.seq_relationship.*`) is ignored on
import: our EncoderModel has none.

Fine-tuned task models export to the task classes (`TASK_HEADS`, see task_models.py).
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
from lmforge.interop.hf.convert import require_fields, token_ids_from_hf, token_ids_to_hf

MODEL_TYPE = "bert"
BASE_PREFIX = "bert."
HEAD_PREFIXES = ("cls.",)
"""Keys outside the body: a bare BertModel checkpoint gets BASE_PREFIX on every other key."""


def encoder_key_map(body: str, head: dict[str, str]) -> dict[str, str | tuple[str, ...]]:
    """The encoder layout shared by BERT and RoBERTa; `body` is "bert." or "roberta.", `head`
    maps our LM-head names to theirs."""
    layer = body + "encoder.layer.{i}."
    ours = "encoder.blocks.{i}."
    keys: dict[str, str | tuple[str, ...]] = {
        "token_embed.weight": body + "embeddings.word_embeddings.weight",
        "encoder.positions.table.weight": body + "embeddings.position_embeddings.weight",
        "encoder.segment_embed.weight": body + "embeddings.token_type_embeddings.weight",
        "encoder.embed_norm.weight": body + "embeddings.LayerNorm.weight",
        "encoder.embed_norm.bias": body + "embeddings.LayerNorm.bias",
    }
    for part in ("weight", "bias"):
        keys |= {
            f"{ours}self_attn.qkv_proj.{part}": tuple(
                f"{layer}attention.self.{name}.{part}" for name in ("query", "key", "value")
            ),
            f"{ours}self_attn.out_proj.{part}": f"{layer}attention.output.dense.{part}",
            f"{ours}self_attn_norm.{part}": f"{layer}attention.output.LayerNorm.{part}",
            f"{ours}mlp.up_proj.{part}": f"{layer}intermediate.dense.{part}",
            f"{ours}mlp.down_proj.{part}": f"{layer}output.dense.{part}",
            f"{ours}mlp_norm.{part}": f"{layer}output.LayerNorm.{part}",
        }
    keys |= {
        "pooler.dense.weight": body + "pooler.dense.weight",
        "pooler.dense.bias": body + "pooler.dense.bias",
    }
    return keys | head


KEY_MAP = encoder_key_map(
    BASE_PREFIX,
    {
        "lm_head.transform.dense.weight": "cls.predictions.transform.dense.weight",
        "lm_head.transform.dense.bias": "cls.predictions.transform.dense.bias",
        "lm_head.transform.norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "lm_head.transform.norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "lm_head.bias": "cls.predictions.bias",
    },
)
TRANSFORMS: dict = {}
TIED_HF_KEY = "cls.predictions.decoder.weight"
OPTIONAL_HF_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
"""The pooler: BertForMaskedLM checkpoints have none (see convert.py)."""
ALIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
IGNORED_HF_KEYS = (
    r"bert\.embeddings\.(position_ids|token_type_ids)",  # buffers saved by old versions
    r"cls\.seq_relationship\.(weight|bias)",
)

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}  # fmt: skip

REQUIRED = {
    "family": "encoder",
    "norm.kind": "layernorm",
    "norm.placement": "post",
    "norm.bias": True,
    "position.kind": "learned",
    "position.offset": 0,
    "embedding.norm": True,
    "embedding.scale": "none",
    "mlp.gated": False,
    "mlp.bias": True,
    "attention.bias": True,
    "attention.score_scale": "inverse_sqrt",
    "attention.num_kv_heads": None,  # one key/value head per query head
    "head.kind": "transform",
    "head.bias": "trained",
    "head.logit_scale": "none",
    # Untied, HF 5 unties the head's bias too (cls.predictions.decoder.bias is used, .bias not);
    # every BERT and RoBERTa checkpoint is tied, so that variant is not supported.
    "tie_word_embeddings": True,
}


def check_encoder_options(hf_config: Any, name: str) -> None:
    """Refuse BERT-family options our EncoderModel does not implement."""
    kind = getattr(hf_config, "position_embedding_type", "absolute")
    if kind != "absolute":
        raise LmforgeError(f"{name} position_embedding_type={kind!r} is not supported")
    if not hf_config.tie_word_embeddings:
        raise LmforgeError(f"{name} config tie_word_embeddings=false is not supported")
    for option in ("is_decoder", "add_cross_attention"):
        if getattr(hf_config, option, False):
            raise LmforgeError(f"{name} config {option}=true is not supported")
    if hf_config.hidden_act not in _ACTIVATIONS:
        raise LmforgeError(
            f"{name} hidden_act {hf_config.hidden_act!r} is not supported; "
            f"supported: {', '.join(_ACTIVATIONS)}"
        )


def encoder_config(hf_config: Any, *, position: PositionConfig) -> ModelConfig:
    """Our ModelConfig for a BERT-family config with the given positions."""
    return ModelConfig(
        family="encoder",
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        num_heads=hf_config.num_attention_heads,
        num_layers=hf_config.num_hidden_layers,
        d_ff=hf_config.intermediate_size,
        norm=NormConfig(kind="layernorm", placement="post", eps=hf_config.layer_norm_eps),
        position=position,
        mlp=MLPConfig(activation=_ACTIVATIONS[hf_config.hidden_act]),
        attention=AttentionConfig(dropout=hf_config.attention_probs_dropout_prob),
        embedding=EmbeddingConfig(num_segment_types=hf_config.type_vocab_size, norm=True),
        head=HeadConfig(kind="transform", bias="trained"),
        tokens=token_ids_from_hf(hf_config),
        dropout=hf_config.hidden_dropout_prob,
        init_std=hf_config.initializer_range,
    )


def encoder_config_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """BertConfig/RobertaConfig keyword arguments shared by both."""
    activation = {"gelu_tanh": "gelu_new"}.get(cfg.mlp.activation, cfg.mlp.activation)
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.d_ff,
        hidden_act=activation,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention.dropout,
        type_vocab_size=cfg.embedding.num_segment_types,
        initializer_range=cfg.init_std,
        layer_norm_eps=cfg.norm.eps,
        **token_ids_to_hf(cfg),
    )


def encoder_task_heads(prefix: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Task-model kind -> (transformers class, our module -> theirs) of the token-classification and
    QA heads, the same in BERT and RoBERTa (`prefix`: "Bert", "Roberta"); the backbone maps as in
    KEY_MAP."""
    return {
        "token": (f"{prefix}ForTokenClassification", {"head.proj": "classifier"}),
        "span": (f"{prefix}ForQuestionAnswering", {"head.proj": "qa_outputs"}),
    }


TASK_HEADS = encoder_task_heads("Bert") | {
    # The pooler is the backbone's, bert.pooler (KEY_MAP): dropout -> classifier on it, as ours.
    "sequence": ("BertForSequenceClassification", {"head.proj": "classifier"}),
}


def hf_model_class() -> type:
    from transformers import BertForMaskedLM

    return BertForMaskedLM


def prepare_hf_model(model: Any, cfg: ModelConfig) -> None:
    """Give BertForMaskedLM the pooler its checkpoint keeps (see the module docstring)."""
    from transformers.models.bert.modeling_bert import BertPooler

    model.bert.pooler = BertPooler(model.config)


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.BertConfig`; options we do not implement are errors."""
    check_encoder_options(hf_config, "BERT")
    position = PositionConfig(kind="learned", max_positions=hf_config.max_position_embeddings)
    return encoder_config(hf_config, position=position)


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.BertConfig` describing `cfg`."""
    from transformers import BertConfig

    require_fields(cfg, REQUIRED, "BERT")
    if cfg.embedding.num_segment_types < 1:
        raise LmforgeError("this model cannot be exported as BERT: it needs segment embeddings")
    return BertConfig(
        **encoder_config_kwargs(cfg), max_position_embeddings=cfg.position.max_positions
    )
