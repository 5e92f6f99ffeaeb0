"""Named model configurations: data only, each with the source of its numbers.

`*-tiny` presets are the quickstart size: a few million parameters, minutes of training on a laptop
CPU. Tests shrink them further with overrides (d_model 32, 2 layers). The vocabulary size of a
preset is a default: `lmforge pretrain` replaces it with the tokenizer's (rounded up to a multiple
of 64) unless `--model.vocab_size` is given.

Presets named after a released checkpoint (gpt2-small ... gpt2-xl, bert-base/-large,
roberta-base/-large, t5-small/-base/-large (v1.1), bart-base/-large, bloom-560m/-1b1/-1b7,
smollm-135m, tinyllama-1.1b) have its exact shape; tests/interop/test_published_shapes.py checks
them against the released config.json and parameter count. Dropout is 0 in every preset.
"""

from __future__ import annotations

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

# GPT-2 (Radford et al. 2019; openai-community/gpt2 config.json): pre-norm LayerNorm eps 1e-5,
# learned
# positions (1024), GELU tanh, biases everywhere, tied head. Dropout 0.1 in the release; 0 here, as
# in
# modern pretraining recipes (nanoGPT, Pythia) where one pass over the data does not overfit.
_GPT2 = dict(
    family="decoder",
    norm=NormConfig(kind="layernorm", placement="pre", eps=1e-5),
    mlp=MLPConfig(activation="gelu_tanh"),
    attention=AttentionConfig(score_scale="inverse_sqrt"),
    embedding=EmbeddingConfig(norm=False),
    tie_word_embeddings=True,
)

# BLOOM (BigScience 2022; bigscience/bloom-560m config.json): like GPT-2 but ALiBi instead of
# learned
# positions and a LayerNorm right after the word embeddings.
_BLOOM = dict(
    family="decoder",
    norm=NormConfig(kind="layernorm", placement="pre", eps=1e-5),
    position=PositionConfig(kind="alibi"),
    mlp=MLPConfig(activation="gelu_tanh"),
    attention=AttentionConfig(score_scale="inverse_sqrt"),
    embedding=EmbeddingConfig(norm=True, dropout=None),  # BloomModel has no embedding dropout
    tie_word_embeddings=True,
)

# BERT (Devlin et al. 2019; google-bert/bert-base-uncased config.json: hidden_act "gelu" (erf),
# layer_norm_eps 1e-12, max_position_embeddings 512, type_vocab_size 2, vocab_size 30522): post-norm
# blocks, learned positions, token type embeddings, a LayerNorm after the embeddings, and the MLM
# head dense + GELU + LayerNorm + tied decoder with its own bias. Dropout 0.1 in the release; 0
# here, as for GPT-2.
_BERT = dict(
    family="encoder",
    norm=NormConfig(kind="layernorm", placement="post", eps=1e-12),
    mlp=MLPConfig(activation="gelu"),
    attention=AttentionConfig(score_scale="inverse_sqrt"),
    embedding=EmbeddingConfig(num_segment_types=2, norm=True),
    head=HeadConfig(kind="transform", bias="trained"),
    tie_word_embeddings=True,
)

# RoBERTa (Liu et al. 2019; FacebookAI/roberta-base config.json: layer_norm_eps 1e-5,
# max_position_embeddings 514, type_vocab_size 1, pad_token_id 1, vocab_size 50265): BERT's blocks
# with one token type and fairseq's position offset: positions count from padding index + 1 = 2,
# so the 514-row table serves 512 tokens. Its classification head drops out before the dense layer
# too (RobertaClassificationHead).
_ROBERTA = dict(
    _BERT,
    norm=NormConfig(kind="layernorm", placement="post", eps=1e-5),
    embedding=EmbeddingConfig(num_segment_types=1, norm=True),
    head=HeadConfig(kind="transform", bias="trained", pooler_dropout="around"),
)

# T5 v1.1 (Raffel et al. 2020; google/t5-v1_1-small config.json, and interop/hf/t5.py
# config_from_hf): RMSNorm eps 1e-6 without bias, pre-norm with a final norm, relative position
# bias (32 buckets, max distance 128) shared by the layers of each stack, gated GELU (tanh form,
# "gated-gelu"), no biases anywhere, unscaled attention scores, untied head. Unscaled scores need
# T5's initialisation (init="t5", see LanguageModel.init_weights). Dropout sites as T5Stack's: also
# inside the feed-forward before `wo` and after each stack's final norm.
_T5 = dict(
    family="encoder_decoder",
    norm=NormConfig(kind="rmsnorm", placement="pre", eps=1e-6, bias=False, final_dropout=0.0),
    position=PositionConfig(kind="relative_bias", num_buckets=32, max_distance=128),
    mlp=MLPConfig(activation="gelu_tanh", gated=True, bias=False, dropout=0.0),
    attention=AttentionConfig(score_scale="none", bias=False),
    embedding=EmbeddingConfig(),
    head=HeadConfig(),
    tie_word_embeddings=False,
    init="t5",
    default_objective="span_corruption",  # T5's span corruption (Raffel et al. 2020, 3.1.4)
)

# BART (Lewis et al. 2020; facebook/bart-base config.json, and interop/hf/bart.py config_from_hf):
# post-norm LayerNorm eps 1e-5, learned positions with fairseq's offset 2, a LayerNorm after the
# embeddings, exact GELU, biases everywhere, one embedding matrix for encoder, decoder and head,
# plus the head bias (final_logits_bias: a fixed buffer, as in transformers). Dropout 0.1 in the
# release; 0 here, as for GPT-2.
_BART = dict(
    family="encoder_decoder",
    norm=NormConfig(kind="layernorm", placement="post", eps=1e-5),
    mlp=MLPConfig(activation="gelu"),
    attention=AttentionConfig(score_scale="inverse_sqrt"),
    embedding=EmbeddingConfig(norm=True),
    head=HeadConfig(bias="fixed"),
    tie_word_embeddings=True,
    default_objective="bart_denoising",  # text infilling + sentence permutation (Lewis et al.)
)

# Llama (Touvron et al. 2023; meta-llama/Llama-2-7b-hf, TinyLlama and SmolLM config.json, and
# interop/hf/llama.py config_from_hf): pre-norm RMSNorm eps 1e-5 without bias, rotary positions
# (theta 10000, rotate-half layout) and no position table, a SiLU-gated feed-forward (SwiGLU,
# Shazeer 2020), no biases anywhere, no dropout on the embeddings. The head is tied here as in
# the small published shapes (SmolLM); Llama 2 and TinyLlama untie it.
_LLAMA = dict(
    family="decoder",
    norm=NormConfig(kind="rmsnorm", placement="pre", eps=1e-5, bias=False),
    mlp=MLPConfig(activation="silu", gated=True, bias=False),
    attention=AttentionConfig(score_scale="inverse_sqrt", bias=False),
    embedding=EmbeddingConfig(norm=False, dropout=None),
    tie_word_embeddings=True,
)

PRESETS: dict[str, ModelConfig] = {
    # Quickstart size: 4 layers x 256 wide, 256-token context (about 3.2 M parameters outside the
    # embeddings).
    "gpt2-tiny": ModelConfig(
        **_GPT2,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        d_ff=1024,
        position=PositionConfig(kind="learned", max_positions=256),
    ),
    # A ~30 M parameter GPT-2 shape (25 M in the blocks, 4 M in the embeddings) for benchmarks.
    "gpt2-30m": ModelConfig(
        **_GPT2,
        vocab_size=8192,
        d_model=512,
        num_heads=8,
        num_layers=8,
        d_ff=2048,
        position=PositionConfig(kind="learned", max_positions=1024),
    ),
    # GPT-2 small, 124 M: 12 layers, 12 heads, width 768, vocabulary 50257 (openai-community/gpt2).
    "gpt2-small": ModelConfig(
        **_GPT2,
        vocab_size=50257,
        d_model=768,
        num_heads=12,
        num_layers=12,
        d_ff=3072,
        position=PositionConfig(kind="learned", max_positions=1024),
    ),
    # GPT-2 medium, large and XL (openai-community/gpt2-medium, -large, -xl config.json): GPT-2
    # small's architecture at 24 x 1024 (16 heads), 36 x 1280 (20 heads) and 48 x 1600 (25 heads);
    # 355 M, 774 M and 1,558 M parameters.
    "gpt2-medium": ModelConfig(
        **_GPT2,
        vocab_size=50257,
        d_model=1024,
        num_heads=16,
        num_layers=24,
        d_ff=4096,
        position=PositionConfig(kind="learned", max_positions=1024),
    ),
    "gpt2-large": ModelConfig(
        **_GPT2,
        vocab_size=50257,
        d_model=1280,
        num_heads=20,
        num_layers=36,
        d_ff=5120,
        position=PositionConfig(kind="learned", max_positions=1024),
    ),
    "gpt2-xl": ModelConfig(
        **_GPT2,
        vocab_size=50257,
        d_model=1600,
        num_heads=25,
        num_layers=48,
        d_ff=6400,
        position=PositionConfig(kind="learned", max_positions=1024),
    ),
    "bloom-tiny": ModelConfig(
        **_BLOOM,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        d_ff=1024,
    ),
    # bloom-560m: 24 layers, 16 heads, width 1024, vocabulary 250880 (bigscience/bloom-560m).
    "bloom-560m": ModelConfig(
        **_BLOOM,
        vocab_size=250880,
        d_model=1024,
        num_heads=16,
        num_layers=24,
        d_ff=4096,
    ),
    # bloom-1b1 and bloom-1b7 (bigscience/bloom-1b1, bigscience/bloom-1b7 config.json): 24 layers,
    # 16 heads, width 1536 and 2048; 1,065 M and 1,722 M parameters.
    "bloom-1b1": ModelConfig(
        **_BLOOM,
        vocab_size=250880,
        d_model=1536,
        num_heads=16,
        num_layers=24,
        d_ff=6144,
    ),
    "bloom-1b7": ModelConfig(
        **_BLOOM,
        vocab_size=250880,
        d_model=2048,
        num_heads=16,
        num_layers=24,
        d_ff=8192,
    ),
    # Quickstart size, like gpt2-tiny: 4 layers x 256 wide, 256-token context; the gated
    # feed-forward is 8/3 x d_model wide (Llama's rule: as many weights as a dense 4 x d_model one)
    # rounded up to a multiple of 16.
    "llama-tiny": ModelConfig(
        **_LLAMA,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        d_ff=688,
        position=PositionConfig(kind="rope", max_positions=256),
    ),
    # gpt2-30m's width, depth and vocabulary with Llama's blocks: 29.5 M parameters (25.3 M in the
    # blocks, 4.2 M in the tied embedding) against gpt2-30m's 29.9 M.
    "llama-30m": ModelConfig(
        **_LLAMA,
        vocab_size=8192,
        d_model=512,
        num_heads=8,
        num_layers=8,
        d_ff=1376,
        position=PositionConfig(kind="rope", max_positions=1024),
    ),
    # SmolLM-135M (HuggingFaceTB/SmolLM-135M config.json): 30 layers, width 576, 9 query heads
    # sharing 3 key/value heads (head width 64), gated d_ff 1536, vocabulary 49152, 2048 positions,
    # tied head; 134.5 M parameters.
    "smollm-135m": ModelConfig(
        **{
            **_LLAMA,
            "attention": AttentionConfig(score_scale="inverse_sqrt", bias=False, num_kv_heads=3),
        },
        vocab_size=49152,
        d_model=576,
        num_heads=9,
        num_layers=30,
        d_ff=1536,
        position=PositionConfig(kind="rope", max_positions=2048),
    ),
    # TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json): Llama 2's
    # architecture, 22 layers, width 2048, 32 query heads sharing 4 key/value heads, gated d_ff
    # 5632, vocabulary 32000, 2048 positions, untied head; 1,100 M parameters.
    "tinyllama-1.1b": ModelConfig(
        **{
            **_LLAMA,
            "attention": AttentionConfig(score_scale="inverse_sqrt", bias=False, num_kv_heads=4),
            "tie_word_embeddings": False,
        },
        vocab_size=32000,
        d_model=2048,
        num_heads=32,
        num_layers=22,
        d_ff=5632,
        position=PositionConfig(kind="rope", max_positions=2048),
    ),
    # Quickstart size, like gpt2-tiny: 4 layers x 256 wide, 256-token context.
    "bert-tiny": ModelConfig(
        **_BERT,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        d_ff=1024,
        position=PositionConfig(kind="learned", max_positions=256),
    ),
    # A ~30 M parameter BERT shape (25 M in the blocks, 4 M in the embeddings) for benchmarks.
    "bert-30m": ModelConfig(
        **_BERT,
        vocab_size=8192,
        d_model=512,
        num_heads=8,
        num_layers=8,
        d_ff=2048,
        position=PositionConfig(kind="learned", max_positions=512),
    ),
    # BERT base, 110 M: 12 layers, 12 heads, width 768 (google-bert/bert-base-uncased).
    "bert-base": ModelConfig(
        **_BERT,
        vocab_size=30522,
        d_model=768,
        num_heads=12,
        num_layers=12,
        d_ff=3072,
        position=PositionConfig(kind="learned", max_positions=512),
    ),
    # BERT large, 335 M: 24 layers, 16 heads, width 1024, d_ff 4096
    # (google-bert/bert-large-uncased config.json).
    "bert-large": ModelConfig(
        **_BERT,
        vocab_size=30522,
        d_model=1024,
        num_heads=16,
        num_layers=24,
        d_ff=4096,
        position=PositionConfig(kind="learned", max_positions=512),
    ),
    "roberta-tiny": ModelConfig(
        **_ROBERTA,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        d_ff=1024,
        position=PositionConfig(kind="learned", max_positions=256, offset=2),
    ),
    # RoBERTa base, 125 M: BERT base's shape with a 50265-token byte-level BPE vocabulary
    # (FacebookAI/roberta-base).
    "roberta-base": ModelConfig(
        **_ROBERTA,
        vocab_size=50265,
        d_model=768,
        num_heads=12,
        num_layers=12,
        d_ff=3072,
        position=PositionConfig(kind="learned", max_positions=512, offset=2),
    ),
    # RoBERTa large, 355 M: BERT large's shape with RoBERTa base's vocabulary and 514-row
    # position table (FacebookAI/roberta-large config.json).
    "roberta-large": ModelConfig(
        **_ROBERTA,
        vocab_size=50265,
        d_model=1024,
        num_heads=16,
        num_layers=24,
        d_ff=4096,
        position=PositionConfig(kind="learned", max_positions=512, offset=2),
    ),
    # Quickstart size, like gpt2-tiny: 4 + 4 layers x 256 wide (d_head 64, T5's d_kv).
    "t5-tiny": ModelConfig(
        **_T5,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        num_decoder_layers=4,
        d_ff=1024,
    ),
    # The T5 v1.1 small shape (google/t5-v1_1-small config.json): width 512, 8 + 8 layers, 6 heads
    # of 64 (attention 384 wide, narrower than d_model), gated d_ff 1024, vocabulary 32128.
    "t5-small": ModelConfig(
        **{**_T5, "attention": AttentionConfig(score_scale="none", bias=False, head_dim=64)},
        vocab_size=32128,
        d_model=512,
        num_heads=6,
        num_layers=8,
        num_decoder_layers=8,
        d_ff=1024,
    ),
    # T5 v1.1 base and large (google/t5-v1_1-base, google/t5-v1_1-large config.json): 12 + 12
    # layers x 768 (12 heads of 64, gated d_ff 2048) and 24 + 24 layers x 1024 (16 heads of 64,
    # gated d_ff 2816), vocabulary 32128; 248 M and 783 M parameters.
    "t5-base": ModelConfig(
        **_T5,
        vocab_size=32128,
        d_model=768,
        num_heads=12,
        num_layers=12,
        num_decoder_layers=12,
        d_ff=2048,
    ),
    "t5-large": ModelConfig(
        **_T5,
        vocab_size=32128,
        d_model=1024,
        num_heads=16,
        num_layers=24,
        num_decoder_layers=24,
        d_ff=2816,
    ),
    # A ~34 M parameter T5 v1.1 shape for benchmarks (25 M in the blocks, 8 M in the untied
    # embedding and head).
    "t5-30m": ModelConfig(
        **_T5,
        vocab_size=8192,
        d_model=512,
        num_heads=8,
        num_layers=4,
        num_decoder_layers=4,
        d_ff=1024,
    ),
    "bart-tiny": ModelConfig(
        **_BART,
        vocab_size=4096,
        d_model=256,
        num_heads=4,
        num_layers=4,
        num_decoder_layers=4,
        d_ff=1024,
        position=PositionConfig(kind="learned", max_positions=256, offset=2),
    ),
    # A ~35 M parameter BART shape for benchmarks (29 M in the blocks, 5 M in the embeddings).
    "bart-30m": ModelConfig(
        **_BART,
        vocab_size=8192,
        d_model=512,
        num_heads=8,
        num_layers=4,
        num_decoder_layers=4,
        d_ff=2048,
        position=PositionConfig(kind="learned", max_positions=1024, offset=2),
    ),
    # BART base, 140 M: 6 + 6 layers, 12 heads, width 768, 1024 positions, vocabulary 50265
    # (facebook/bart-base).
    "bart-base": ModelConfig(
        **_BART,
        vocab_size=50265,
        d_model=768,
        num_heads=12,
        num_layers=6,
        num_decoder_layers=6,
        d_ff=3072,
        position=PositionConfig(kind="learned", max_positions=1024, offset=2),
    ),
    # BART large, 406 M: 12 + 12 layers, 16 heads, width 1024, d_ff 4096, 1024 positions,
    # vocabulary 50265 (facebook/bart-large config.json).
    "bart-large": ModelConfig(
        **_BART,
        vocab_size=50265,
        d_model=1024,
        num_heads=16,
        num_layers=12,
        num_decoder_layers=12,
        d_ff=4096,
        position=PositionConfig(kind="learned", max_positions=1024, offset=2),
    ),
}


def get_preset(name: str) -> ModelConfig:
    """The preset called `name`; an error lists the known names."""
    if name not in PRESETS:
        raise LmforgeError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
