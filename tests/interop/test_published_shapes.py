"""The presets of published models have their exact shapes, and convert to and from transformers.

For each preset of a released checkpoint: the transformers config it maps to equals the released
config.json in every shape field (the values below are copied from the model's config.json on the
Hugging Face Hub, model id cited), the released config maps back onto the preset, and the parameter
count equals the released model's, counted on both sides on the meta device (no memory). A tiny
copy of each (same structure flags, 2 layers, width 48) gives transformers' logits after export and
converts back bit for bit. Dropout is the one deliberate difference: 0 in every preset (see
config/presets.py), 0.1 in most releases.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")

from lmforge.config.model import ModelConfig, TokenIdsConfig, with_dropout  # noqa: E402
from lmforge.config.presets import get_preset  # noqa: E402
from lmforge.interop.hf import build_hf_model, family_for_config  # noqa: E402
from lmforge.interop.hf.convert import (  # noqa: E402
    extra_keys,
    hf_state_dict_to_ours,
    ours_to_hf_state_dict,
)
from lmforge.models.lm import build_model  # noqa: E402
from tests.interop.test_hf_parity import PAD, _assert_logits_match, _batch, _randomise  # noqa: E402

_GPT2 = {"vocab_size": 50257, "n_positions": 1024, "layer_norm_epsilon": 1e-5,
         "activation_function": "gelu_new"}  # n_inner: null (4 x n_embd)  # fmt: skip
_BERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
               "intermediate_size": 4096, "hidden_act": "gelu"}  # fmt: skip
_T5_V1_1 = {"vocab_size": 32128, "d_kv": 64, "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}  # fmt: skip
_BLOOM = {"vocab_size": 250880, "n_layer": 24, "n_head": 16, "layer_norm_epsilon": 1e-5,
          "apply_residual_connection_post_layernorm": False}  # fmt: skip
_LLAMA = {"hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
          "attention_bias": False, "mlp_bias": False}  # fmt: skip

PUBLISHED = {
    # preset: (model id, config.json shape fields, parameters of the released model)
    "gpt2-medium": ("openai-community/gpt2-medium",
                    {**_GPT2, "n_embd": 1024, "n_layer": 24, "n_head": 16}, 354_823_168),
    "gpt2-large": ("openai-community/gpt2-large",
                   {**_GPT2, "n_embd": 1280, "n_layer": 36, "n_head": 20}, 774_030_080),
    "gpt2-xl": ("openai-community/gpt2-xl",
                {**_GPT2, "n_embd": 1600, "n_layer": 48, "n_head": 25}, 1_557_611_200),
    # BertForMaskedLM / RobertaForMaskedLM (no pooler: ours keeps one, counted apart below).
    "bert-large": ("google-bert/bert-large-uncased",
                   {**_BERT_LARGE, "vocab_size": 30522, "max_position_embeddings": 512,
                    "type_vocab_size": 2, "layer_norm_eps": 1e-12}, 335_174_458),
    "roberta-large": ("FacebookAI/roberta-large",
                      {**_BERT_LARGE, "vocab_size": 50265, "max_position_embeddings": 514,
                       "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1},
                      355_412_057),
    "t5-base": ("google/t5-v1_1-base",
                {**_T5_V1_1, "d_model": 768, "d_ff": 2048, "num_heads": 12, "num_layers": 12,
                 "num_decoder_layers": 12}, 247_577_856),
    "t5-large": ("google/t5-v1_1-large",
                 {**_T5_V1_1, "d_model": 1024, "d_ff": 2816, "num_heads": 16, "num_layers": 24,
                  "num_decoder_layers": 24}, 783_150_080),
    # BartForConditionalGeneration: final_logits_bias is a buffer, not a parameter.
    "bart-large": ("facebook/bart-large",
                   {"vocab_size": 50265, "d_model": 1024, "encoder_layers": 12,
                    "decoder_layers": 12, "encoder_attention_heads": 16,
                    "decoder_attention_heads": 16, "encoder_ffn_dim": 4096,
                    "decoder_ffn_dim": 4096, "max_position_embeddings": 1024,
                    "activation_function": "gelu", "scale_embedding": False}, 406_291_456),
    "bloom-1b1": ("bigscience/bloom-1b1", {**_BLOOM, "hidden_size": 1536}, 1_065_314_304),
    "bloom-1b7": ("bigscience/bloom-1b7", {**_BLOOM, "hidden_size": 2048}, 1_722_408_960),
    "smollm-135m": ("HuggingFaceTB/SmolLM-135M",
                    {**_LLAMA, "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "tie_word_embeddings": True}, 134_515_008),
    "tinyllama-1.1b": ("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
                       {**_LLAMA, "vocab_size": 32000, "hidden_size": 2048,
                        "intermediate_size": 5632, "num_hidden_layers": 22,
                        "num_attention_heads": 32, "num_key_value_heads": 4,
                        "tie_word_embeddings": False}, 1_100_048_384),
}  # fmt: skip
NAMES = sorted(PUBLISHED)


def _published_config(name: str):
    """The transformers config of the released model, from the config.json values above."""
    family = family_for_config(get_preset(name))
    config_class = type(family.config_to_hf(get_preset(name)))
    return config_class(**PUBLISHED[name][1])


def _architecture(cfg: ModelConfig) -> ModelConfig:
    """`cfg` without what a release does not fix: dropout rates (0 in presets) and token ids."""
    return dataclasses.replace(with_dropout(cfg, 0.0), tokens=TokenIdsConfig())


def _exported_config_json(cfg: ModelConfig) -> dict:
    """The config.json `convert --to-hf` writes for `cfg` (the family's fix applied)."""
    family = family_for_config(cfg)
    values = family.config_to_hf(cfg).to_dict()
    fix = getattr(family, "fix_saved_config", None)
    return values if fix is None else fix(values)


@pytest.mark.parametrize("name", NAMES)
def test_preset_exports_the_published_config(name: str) -> None:
    ours = _exported_config_json(get_preset(name))
    wrong = {key: (ours.get(key), value) for key, value in PUBLISHED[name][1].items()
             if ours.get(key) != value}  # fmt: skip
    assert not wrong, f"{PUBLISHED[name][0]}: (ours, published) {wrong}"


@pytest.mark.parametrize("name", NAMES)
def test_published_config_maps_onto_the_preset(name: str) -> None:
    family = family_for_config(get_preset(name))
    from_release = family.config_from_hf(_published_config(name))
    assert _architecture(from_release) == _architecture(get_preset(name))


def _num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_the_released_models(name: str) -> None:
    cfg = get_preset(name)
    family = family_for_config(cfg)
    with torch.device("meta"):
        theirs = family.hf_model_class()(_published_config(name))
    prepare = getattr(family, "prepare_hf_model", None)
    if prepare is not None:  # as our export builds it: T5 v1.1's own lm_head, BERT's pooler
        prepare(theirs, cfg)
    ours = build_model(cfg, device="meta").num_parameters()
    # Our encoders keep BERT's pooler (for classification), which the MLM classes lack; RoBERTa's
    # export writes it beside the model (extra_keys), BERT's into it.
    pooler = cfg.d_model * cfg.d_model + cfg.d_model if cfg.family == "encoder" else 0
    beside = pooler if extra_keys(family) else 0
    assert _num_parameters(theirs) + beside == ours
    assert ours == PUBLISHED[name][2] + pooler


def _tiny_copy(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with its structure flags and 2 layers of width 48 (grouped attention keeps its group
    size over 2 key/value heads), vocabulary 128 and 64 positions where a table or the HF config
    holds their number."""
    group = cfg.num_heads // cfg.num_kv_heads
    num_heads, num_kv_heads = (4, None) if group == 1 else (2 * group, 2)
    d_model = 48 if group == 1 else 8 * num_heads
    model_type = family_for_config(cfg).MODEL_TYPE
    return dataclasses.replace(
        cfg, vocab_size=128, d_model=d_model, num_heads=num_heads, num_layers=2,
        num_decoder_layers=None if cfg.num_decoder_layers is None else 2,
        d_ff=4 * d_model if model_type == "bloom" else 80,
        position=(
            dataclasses.replace(cfg.position, max_positions=64)
            if cfg.position.kind in ("learned", "rope") else cfg.position
        ),
        attention=dataclasses.replace(cfg.attention, num_kv_heads=num_kv_heads),
        tokens=TokenIdsConfig(pad_id=PAD.get(model_type, 0)),
    )  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_tiny_copy_exports_with_transformers_logits_and_converts_back(name: str) -> None:
    cfg = _tiny_copy(get_preset(name))
    family = family_for_config(cfg)
    model = _randomise(build_model(cfg))
    hf_model = build_hf_model(cfg, model.state_dict())
    batch, keep = _batch(family.MODEL_TYPE)
    with torch.no_grad():
        _assert_logits_match(model(**batch).logits, hf_model(**batch).logits, keep)
    assert family.config_from_hf(hf_model.config) == cfg
    # Weights the HF class has no place for (RoBERTa's pooler) travel beside it, as in a folder.
    exported = ours_to_hf_state_dict(family, model.state_dict(), cfg)
    extra = {key: exported[key] for key in extra_keys(family)}
    back = hf_state_dict_to_ours(family, {**hf_model.state_dict(), **extra}, cfg)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[key], value) for key, value in model.state_dict().items())
