"""Normalisation layers: LayerNorm with an optional bias, and RMSNorm (T5's "T5LayerNorm").

RMSNorm follows Zhang & Sennrich (2019) and the T5 reference: no mean subtraction, no bias, the
variance computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.model import NormConfig


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, *, eps: float, bias: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, *, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # T5 computes the mean square in float32 and casts back before the weight multiply.
        variance = x.float().pow(2).mean(-1, keepdim=True)
        normed = (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)
        return self.weight * normed

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def build_norm(cfg: NormConfig, d_model: int) -> nn.Module:
    if cfg.kind == "rmsnorm":
        return RMSNorm(d_model, eps=cfg.eps)
    return LayerNorm(d_model, eps=cfg.eps, bias=cfg.bias)
