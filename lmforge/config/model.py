"""ModelConfig: one architecture description for all six reference models.

Each choice that distinguishes BERT, RoBERTa, GPT-2, BLOOM, Llama, T5 and BART is a field of the
component sub-config it changes (see STYLE.md section 3). This module imports no torch, so a
configuration can be checked anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from lmforge.errors import LmforgeError

Family = Literal["encoder", "decoder", "encoder_decoder"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise LmforgeError(message)


def _require_rate(rate: float | None, name: str) -> None:
    """A dropout rate is in [0, 1); None (a site the model type does not have) is allowed."""
    _require(rate is None or 0 <= rate < 1, f"{name} must be in [0, 1), got {rate}")


@dataclass(frozen=True, kw_only=True)
class NormConfig:
    kind: Literal["layernorm", "rmsnorm"] = "layernorm"
    """layernorm (BERT, GPT-2, BLOOM, BART) or rmsnorm (T5)."""
    placement: Literal["pre", "post"] = "pre"
    """pre: x + f(norm(x)), plus a final norm after the stack; post: norm(x + f(x))."""
    eps: float = 1e-5
    bias: bool = True
    """Whether the norm has an additive bias (T5's RMSNorm has none)."""
    final_dropout: float | None = None
    """Dropout after the final norm of each stack (pre placement only), during training only: T5
    (its dropout_rate); None: no dropout there (GPT-2, BLOOM)."""

    def __post_init__(self) -> None:
        _require(not (self.kind == "rmsnorm" and self.bias), "norm.bias must be false for rmsnorm")
        _require(self.eps > 0, f"norm.eps must be > 0, got {self.eps}")
        _require_rate(self.final_dropout, "norm.final_dropout")
        _require(
            self.final_dropout is None or self.placement == "pre",
            "norm.final_dropout needs norm.placement=pre (only pre-norm stacks end in a norm)",
        )


@dataclass(frozen=True, kw_only=True)
class PositionConfig:
    kind: Literal["learned", "sinusoidal", "rope", "alibi", "relative_bias", "none"] = "learned"
    max_positions: int = 1024
    """Longest sequence (tokens) a learned or sinusoidal table covers."""
    offset: int = 0
    """Index of the first position in the table: RoBERTa and BART start counting at 2."""
    num_buckets: int = 32
    """relative_bias only: number of distance buckets."""
    max_distance: int = 128
    """relative_bias only: distance (tokens) beyond which buckets are logarithmically shared."""
    rope_theta: float = 10000.0
    """rope only: base of the rotation frequencies."""

    def __post_init__(self) -> None:
        _require(self.max_positions > 0, "position.max_positions must be > 0")
        _require(self.offset >= 0, "position.offset must be >= 0")


@dataclass(frozen=True, kw_only=True)
class MLPConfig:
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    """gelu is the exact (erf) form; gelu_tanh the tanh approximation used by GPT-2 and BLOOM."""
    gated: bool = False
    """Gated feed-forward, act(x W_gate) * (x W_up) (T5 v1.1)."""
    bias: bool = True
    dropout: float | None = None
    """Dropout on the activation (the gated product), before the down projection, during training
    only: T5 (its dropout_rate); None: no dropout there (BERT, RoBERTa, GPT-2, BLOOM, and BART,
    whose activation_dropout is 0 in every released config)."""

    def __post_init__(self) -> None:
        _require_rate(self.dropout, "mlp.dropout")


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    score_scale: Literal["inverse_sqrt", "none"] = "inverse_sqrt"
    """Scores are q.k / sqrt(d_head), or unscaled q.k (T5 folds the scale into its init)."""
    bias: bool = True
    """Biases on the query, key, value and output projections."""
    dropout: float = 0.0
    """Dropout on attention probabilities, during training only."""
    head_dim: int | None = None
    """Width of each head; None: d_model / num_heads. T5 v1.1 small has 6 heads of 64 on a
    d_model of 512, so its attention is narrower than the residual stream."""
    num_kv_heads: int | None = None
    """Key/value heads of self-attention, each shared by num_heads / num_kv_heads query heads
    (grouped-query attention, Ainslie et al. 2023: TinyLlama, SmolLM); None: one per query head."""

    def __post_init__(self) -> None:
        _require(0 <= self.dropout < 1, f"attention.dropout must be in [0, 1), got {self.dropout}")
        _require(
            self.num_kv_heads is None or self.num_kv_heads > 0,
            f"attention.num_kv_heads must be > 0, got {self.num_kv_heads}",
        )


@dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    num_segment_types: int = 0
    """Token type (segment) embeddings: 2 for BERT, 1 for RoBERTa, 0 for none."""
    norm: bool = False
    """A norm right after the embeddings (BERT, RoBERTa, BLOOM, BART)."""
    scale: Literal["none", "sqrt_d_model"] = "none"
    """Multiply token embeddings by sqrt(d_model) before adding positions."""
    dropout: float | None = 0.0
    """Dropout on the embedding output (after the norm, if any), during training only; None: no
    dropout there (BLOOM)."""

    def __post_init__(self) -> None:
        _require(self.num_segment_types >= 0, "embedding.num_segment_types must be >= 0")
        _require_rate(self.dropout, "embedding.dropout")


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    kind: Literal["linear", "transform"] = "linear"
    """linear: project onto the vocabulary; transform: dense + activation + norm first (BERT MLM
    head)."""
    bias: Literal["none", "trained", "fixed"] | bool = "none"
    """An output bias over the vocabulary: none; trained (BERT's decoder bias, a parameter); fixed
    (BART's final_logits_bias, a buffer: zeros, or what a checkpoint holds). true/false, the
    spelling of runs made before the three kinds, read as trained/none."""
    logit_scale: Literal["none", "inverse_sqrt_d_model"] = "none"
    """Scale hidden states by d_model^-1/2 before a tied projection (T5 v1.0)."""
    pooler_dropout: Literal["after", "around"] = "after"
    """Sequence classification on the pooled first token drops out after the pooler (BERT's
    BertForSequenceClassification) or before and after it (RoBERTa's RobertaClassificationHead:
    dropout, dense, tanh, dropout, out_proj)."""

    def __post_init__(self) -> None:
        if isinstance(self.bias, bool):  # frozen: the legacy spelling is normalised in place
            object.__setattr__(self, "bias", "trained" if self.bias else "none")


@dataclass(frozen=True, kw_only=True)
class TokenIdsConfig:
    """The special token ids generation needs, stored with the model so that nothing guesses them
    later: filled from the tokenizer and the objective when a run is created, and from the HF
    config (pad/bos/eos/decoder_start_token_id) when a checkpoint is converted."""

    pad_id: int | None = None
    """Padding token; None: the tokenizer has none."""
    bos_id: int | None = None
    """Start-of-text token (<s>, GPT-2's <|endoftext|>); None for T5 and BERT vocabularies."""
    eos_id: int | None = None
    """End-of-text token (</s>, <|endoftext|>): generation stops at it."""
    decoder_start_id: int | None = None
    """encoder_decoder only: the decoder's first input token, the one its pretraining started
    from: <pad> after T5 span corruption, </s> after BART denoising."""

    def __post_init__(self) -> None:
        for name, value in self.items():
            _require(value is None or value >= 0, f"model.tokens.{name} must be >= 0, got {value}")

    def items(self) -> list[tuple[str, int | None]]:
        """(field name, id) pairs, in field order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


ObjectiveKind = Literal["clm", "mlm", "span_corruption", "bart_denoising"]
"""Pretraining objectives (lmforge/objectives/), the values of objective.kind."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    family: Family
    vocab_size: int
    """Rows of the embedding table; must cover the tokenizer's vocabulary."""
    d_model: int
    num_heads: int
    num_layers: int
    """Layers of the encoder (encoder, encoder_decoder) or of the decoder (decoder)."""
    d_ff: int
    num_decoder_layers: int | None = None
    """encoder_decoder only: layers of the decoder (defaults to num_layers)."""
    norm: NormConfig = field(default_factory=NormConfig)
    position: PositionConfig = field(default_factory=PositionConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    tokens: TokenIdsConfig = field(default_factory=TokenIdsConfig)
    """Special token ids (pad, bos, eos, decoder start); ids below vocab_size."""
    tie_word_embeddings: bool = True
    dropout: float = 0.0
    """Dropout on each sublayer's output before the residual add, during training only."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of weights (init "gpt2")."""
    init: Literal["gpt2", "t5"] = "gpt2"
    """Weight initialisation: gpt2 (N(0, init_std), residual projections scaled by
    1/sqrt(2 * layers)) or t5 (Mesh TensorFlow's fan-in scaling, queries also by d_head^-1/2, as
    unscaled attention scores need; init_std unused)."""
    default_objective: ObjectiveKind | None = None
    """The pretraining objective of this model type's paper, used when objective.kind is not
    given: span_corruption (T5), bart_denoising (BART); None: the family's (clm for decoders, mlm
    for encoders; encoder-decoders must then name theirs)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_heads", "num_layers", "d_ff"):
            _require(
                getattr(self, name) > 0, f"model.{name} must be > 0, got {getattr(self, name)}"
            )
        _require(
            self.attention.head_dim is not None or self.d_model % self.num_heads == 0,
            f"model.d_model ({self.d_model}) must be divisible by "
            f"model.num_heads ({self.num_heads}), or set model.attention.head_dim",
        )
        _require(
            self.num_decoder_layers is None or self.family == "encoder_decoder",
            "model.num_decoder_layers is only valid for family encoder_decoder",
        )
        _require(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")
        _require(
            self.num_heads % self.num_kv_heads == 0,
            f"model.num_heads ({self.num_heads}) must be a multiple of "
            f"model.attention.num_kv_heads ({self.num_kv_heads})",
        )
        _require(
            not (self.position.kind == "rope" and self.d_head % 2),
            f"rope needs an even d_head, got {self.d_head}",
        )
        for name, value in self.tokens.items():
            _require(
                value is None or value < self.vocab_size,
                f"model.tokens.{name} ({value}) must be < model.vocab_size ({self.vocab_size})",
            )
        _require(
            self.tokens.decoder_start_id is None or self.family == "encoder_decoder",
            "model.tokens.decoder_start_id is only valid for family encoder_decoder",
        )

    @property
    def d_head(self) -> int:
        return self.attention.head_dim or self.d_model // self.num_heads

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads of self-attention (num_heads unless grouped-query attention)."""
        return self.attention.num_kv_heads or self.num_heads

    @property
    def d_attention(self) -> int:
        """Width of the concatenated heads (d_model unless attention.head_dim says otherwise)."""
        return self.num_heads * self.d_head

    @property
    def is_causal(self) -> bool:
        """Whether the (only) stack attends causally: true for decoder-only models."""
        return self.family == "decoder"

    @property
    def max_seq_len(self) -> int | None:
        """Longest input the positions support; None where any length works (alibi, rope, ...)."""
        if self.position.kind in ("learned", "sinusoidal"):
            return self.position.max_positions
        return None


def with_dropout(cfg: ModelConfig, rate: float) -> ModelConfig:
    """`cfg` with every dropout site it has at `rate`: residuals, attention probabilities, and the
    embedding output, MLP activation and final norm where the model type drops there (a site that
    is None stays absent, as in the reference model: BLOOM's embeddings, GPT-2's MLP)."""

    def site(current: float | None) -> float | None:
        return None if current is None else rate

    return replace(
        cfg,
        dropout=rate,
        attention=replace(cfg.attention, dropout=rate),
        embedding=replace(cfg.embedding, dropout=site(cfg.embedding.dropout)),
        mlp=replace(cfg.mlp, dropout=site(cfg.mlp.dropout)),
        norm=replace(cfg.norm, final_dropout=site(cfg.norm.final_dropout)),
    )
