"""Position-wise feed-forward networks: dense (BERT, GPT-2, BLOOM, BART) and gated (T5 v1.1).

Dense:  down(act(up(x)))
Gated:  down(act(gate(x)) * up(x))      (Shazeer 2020, "GLU Variants Improve Transformer")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(self.activation(self.up_proj(x)))
        return self.down_proj(self.activation(self.gate_proj(x)) * self.up_proj(x))
