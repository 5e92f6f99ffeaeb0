"""Output heads and the token-level loss.

The language-modeling head projects hidden states onto the vocabulary, with the word embeddings
(tied) or its own matrix, optionally after a dense + activation + norm transform (BERT's MLM head)
and with an optional output bias (BERT's decoder bias, BART's final_logits_bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.layers.mlp import ACTIVATIONS
from lmforge.layers.norms import build_norm
from lmforge.models.config import ModelConfig

IGNORE_INDEX = -100
"""Label of positions that carry no target (padding, unmasked tokens of MLM)."""


class HeadTransform(nn.Module):
    """dense -> activation -> norm, applied before the vocabulary projection (BERT, RoBERTa)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.activation = ACTIVATIONS[cfg.mlp.activation]
        self.norm = build_norm(cfg.norm, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.dense(x)))


class LMHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(cfg) if cfg.head.kind == "transform" else None
        tied = cfg.tie_word_embeddings
        self.weight = None if tied else nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.head.bias else None
        # T5 v1.0 rescales before its tied projection (Mesh TensorFlow's transformer).
        self.scale = cfg.d_model**-0.5 if cfg.head.logit_scale == "inverse_sqrt_d_model" else None

    def forward(self, hidden: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """hidden: (..., D) -> logits (..., V); `embedding_weight` (V, D) is used when tied."""
        if self.transform is not None:
            hidden = self.transform(hidden)
        if self.scale is not None:
            hidden = hidden * self.scale
        weight = embedding_weight if self.weight is None else self.weight
        return F.linear(hidden, weight, self.bias)


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over positions whose label is not IGNORE_INDEX, and their count.

    logits: (N, V), labels: (N,). Summing (not averaging) lets the trainer divide by the number of
    target tokens of the whole optimizer step, across accumulation and ranks.
    """
    loss_sum = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (labels != IGNORE_INDEX).sum()
