"""Position-wise feed-forward networks: dense (BERT, GPT-2, BLOOM, BART) and gated (T5 v1.1).

Dense:  down(drop(act(up(x))))
Gated:  down(drop(act(gate(x)) * up(x)))      (Shazeer 2020, "GLU Variants Improve Transformer")

`drop` exists where the reference model drops there (T5's T5DenseGatedActDense, before `wo`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.model import MLPConfig

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact, erf-based (BERT, BART)
    "gelu_tanh": partial(F.gelu, approximate="tanh"),  # GPT-2's "gelu_new", BLOOM, T5 v1.1
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, cfg: MLPConfig) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[cfg.activation]
        self.up_proj = nn.Linear(d_model, d_ff, bias=cfg.bias)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=cfg.bias) if cfg.gated else None
        self.down_proj = nn.Linear(d_ff, d_model, bias=cfg.bias)
        # An identity where the reference model has no dropout here (all but T5).
        self.dropout = nn.Identity() if cfg.dropout is None else nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            hidden = self.activation(self.up_proj(x))
        else:
            hidden = self.activation(self.gate_proj(x)) * self.up_proj(x)
        return self.down_proj(self.dropout(hidden))
