"""RoBERTa <-> Hugging Face `RobertaForMaskedLM` (model_type "roberta").

The layout is BERT's (see bert.py) under "roberta." with the MLM head at `lm_head.*`. Positions:
HF numbers real tokens from padding_idx + 1 (= 2 with RoBERTa's pad id 1), computing them from the
input ids so that padding tokens are skipped; rows 0..padding_idx of the table are never used. Ours
counts positions 0, 1, ... and looks them up at `offset` = padding_idx + 1, which is the same
whenever padding is on the right (the only padding our data pipeline makes). The head's activation
is always exact GELU in HF, whatever `hidden_act` says.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lmforge.config.model import ModelConfig, PositionConfig
from lmforge.errors import LmforgeError
from lmforge.interop.hf.bert import (
    REQUIRED as BERT_REQUIRED,
)
from lmforge.interop.hf.bert import (
    check_encoder_options,
    encoder_config,
    encoder_config_kwargs,
    encoder_key_map,
    encoder_task_heads,
)
from lmforge.interop.hf.convert import require_fields

MODEL_TYPE = "roberta"
BASE_PREFIX = "roberta."
HEAD_PREFIXES = ("lm_head.",)

KEY_MAP = encoder_key_map(
    BASE_PREFIX,
    {
        "lm_head.transform.dense.weight": "lm_head.dense.weight",
        "lm_head.transform.dense.bias": "lm_head.dense.bias",
        "lm_head.transform.norm.weight": "lm_head.layer_norm.weight",
        "lm_head.transform.norm.bias": "lm_head.layer_norm.bias",
        "lm_head.bias": "lm_head.bias",
    },
)
TRANSFORMS: dict = {}
TIED_HF_KEY = "lm_head.decoder.weight"
HF_EXTRA_KEYS = ("roberta.pooler.dense.weight", "roberta.pooler.dense.bias")
"""The pooler: RobertaForMaskedLM has none (see convert.py), nor has any RoBERTa task class, whose
classification head has its own dense layer (our pooler in a fine-tuned model)."""
OPTIONAL_HF_KEYS = HF_EXTRA_KEYS
TASK_HEADS = encoder_task_heads("Roberta") | {
    # RobertaClassificationHead: dropout -> dense -> tanh -> dropout -> out_proj on <s>; ours:
    # the pooler (dense + tanh on the first token) -> dropout -> proj. The same in eval mode.
    "sequence": ("RobertaForSequenceClassification",
                 {"backbone.pooler.dense": "classifier.dense", "head.proj": "classifier.out_proj"}),
}  # fmt: skip
ALIASES = {"lm_head.decoder.bias": "lm_head.bias"}
IGNORED_HF_KEYS = (r"roberta\.embeddings\.(position_ids|token_type_ids)",)

REQUIRED = {
    **{k: v for k, v in BERT_REQUIRED.items() if k != "position.offset"},
    "mlp.activation": "gelu",
}


def hf_model_class() -> type:
    from transformers import RobertaForMaskedLM

    return RobertaForMaskedLM


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a `transformers.RobertaConfig`."""
    check_encoder_options(hf_config, "RoBERTa")
    if hf_config.hidden_act != "gelu":
        raise LmforgeError(
            f"RoBERTa hidden_act {hf_config.hidden_act!r} is not supported: its MLM head always "
            "uses gelu, and ours uses the model's activation"
        )
    offset = hf_config.pad_token_id + 1
    position = PositionConfig(
        kind="learned", max_positions=hf_config.max_position_embeddings - offset, offset=offset
    )
    cfg = encoder_config(hf_config, position=position)
    # RobertaClassificationHead drops out before its dense layer too.
    return replace(cfg, head=replace(cfg.head, pooler_dropout="around"))


def config_to_hf(cfg: ModelConfig) -> Any:
    """A `transformers.RobertaConfig` describing `cfg` (pad id = position offset - 1)."""
    from transformers import RobertaConfig

    require_fields(cfg, REQUIRED, "RoBERTa")
    if cfg.position.offset < 1 or cfg.embedding.num_segment_types < 1:
        raise LmforgeError(
            "this model cannot be exported as RoBERTa: it needs model.position.offset >= 1 "
            "(the pad id + 1) and segment embeddings"
        )
    # HF RoBERTa counts positions from the pad id + 1: the offset decides the pad id.
    pad = cfg.position.offset - 1
    return RobertaConfig(
        **(encoder_config_kwargs(cfg) | {"pad_token_id": pad}),
        max_position_embeddings=cfg.position.max_positions + cfg.position.offset,
    )
