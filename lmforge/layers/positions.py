"""Position schemes behind one interface with three hooks.

Every scheme implements the hooks it needs and inherits identity/None for the others, so attention
calls all of them unconditionally and never tests the kind:

1. `embed(position_ids)`        a vector added to the input embeddings       (learned, sinusoidal)
2. `rotary(position_ids)`       cos/sin that rotate queries and keys          (rope)
3. `score_bias(q_pos, k_pos)`   a bias added to attention scores              (alibi, relative_bias)

Position ids are (B, T) int64 tensors (B may be 1 and broadcast). The score bias is computed once
per stack and shared by its layers, as in the original T5 and BLOOM.

References: learned (Devlin et al. 2019; Radford et al. 2019), sinusoidal (Vaswani et al. 2017),
rope (Su et al. 2021), alibi (Press et al. 2022; BLOOM), relative_bias (Raffel et al. 2020; T5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config.model import PositionConfig

Rotary = tuple[torch.Tensor, torch.Tensor]


class PositionScheme(nn.Module):
    """No positional information; the base every scheme overrides a subset of."""

    def embed(self, position_ids: torch.Tensor) -> torch.Tensor | None:
        return None

    def rotary(self, position_ids: torch.Tensor) -> Rotary | None:
        return None

    def score_bias(
        self, q_positions: torch.Tensor, k_positions: torch.Tensor
    ) -> torch.Tensor | None:
        return None

    def reset_parameters(self, std: float) -> None:
        pass


class LearnedPositions(PositionScheme):
    def __init__(self, cfg: PositionConfig, d_model: int) -> None:
        super().__init__()
        # RoBERTa and BART reserve the first `offset` rows (RoBERTa: padding index + 1 = 2).
        self.offset = cfg.offset
        self.table = nn.Embedding(cfg.max_positions + cfg.offset, d_model)

    def embed(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table(position_ids + self.offset)

    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.table.weight, std=std)


class SinusoidalPositions(PositionScheme):
    def __init__(self, cfg: PositionConfig, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def embed(self, position_ids: torch.Tensor) -> torch.Tensor:
        half = self.d_model // 2
        exponent = torch.arange(half, device=position_ids.device, dtype=torch.float32) / half
        angles = position_ids.unsqueeze(-1).float() / (10000.0**exponent)
        # [sin | cos] halves, as fairseq and BART-style sinusoidal tables lay them out.
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class RotaryPositions(PositionScheme):
    def __init__(self, cfg: PositionConfig, d_head: int) -> None:
        super().__init__()
        self.d_head = d_head
        self.theta = cfg.rope_theta

    def rotary(self, position_ids: torch.Tensor) -> Rotary:
        half = self.d_head // 2
        exponent = torch.arange(half, device=position_ids.device, dtype=torch.float32) / half
        angles = position_ids.unsqueeze(-1).float() / (self.theta**exponent)  # (B, T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)  # (B, 1, T, Dh)
        return angles.cos(), angles.sin()


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head slopes m_h of ALiBi (Press et al. 2022, section 3; BLOOM's implementation).

    For n heads, n a power of two: m_h = 2^(-8h/n), h = 1..n. Otherwise the slopes of the closest
    lower power of two, then every other slope of the next power of two.
    """
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = [2 ** (-8 * h / closest) for h in range(1, closest + 1)]
    if closest < num_heads:
        extra = [2 ** (-4 * h / closest) for h in range(1, 2 * (num_heads - closest), 2)]
        slopes += extra
    return torch.tensor(slopes, dtype=torch.float32)


class AlibiPositions(PositionScheme):
    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def score_bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        # bias[b, h, i, j] = m_h * (j - i) = -m_h * distance (BLOOM paper, eq. in section 3.2.4).
        distance = k_positions[:, None, None, :] - q_positions[:, None, :, None]  # (B, 1, T, S)
        return self.slopes.view(1, -1, 1, 1) * distance.float()

    def reset_parameters(self, std: float) -> None:
        self.slopes.copy_(alibi_slopes(self.slopes.numel()))


def relative_position_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucketing of k - q distances (Raffel et al. 2020; mesh_tensorflow's implementation).

    Half the buckets hold exact small distances, the rest grow logarithmically up to max_distance;
    in the bidirectional case the buckets are split again between keys before and after the query.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    scaled = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(
        max_distance / max_exact
    )
    large = (max_exact + (scaled * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativeBiasPositions(PositionScheme):
    def __init__(self, cfg: PositionConfig, num_heads: int, *, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        self.table = nn.Embedding(cfg.num_buckets, num_heads)

    def score_bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        relative = k_positions[:, None, :] - q_positions[:, :, None]  # (B, T, S)
        buckets = relative_position_bucket(
            relative,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return self.table(buckets).permute(0, 3, 1, 2)  # (B, T, S, H) -> (B, H, T, S)

    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.table.weight, std=std)


def build_positions(
    cfg: PositionConfig, *, d_model: int, num_heads: int, d_head: int, is_causal: bool
) -> PositionScheme:
    if cfg.kind == "learned":
        return LearnedPositions(cfg, d_model)
    if cfg.kind == "sinusoidal":
        return SinusoidalPositions(cfg, d_model)
    if cfg.kind == "rope":
        return RotaryPositions(cfg, d_head)
    if cfg.kind == "alibi":
        return AlibiPositions(num_heads)
    if cfg.kind == "relative_bias":
        return RelativeBiasPositions(cfg, num_heads, bidirectional=not is_causal)
    return PositionScheme()


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, rotary: Rotary | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (B, H, T, Dh) queries and keys by position (rope); identity when rotary is None."""
    if rotary is None:
        return q, k
    cos, sin = rotary

    def rotate(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return (x.float() * cos + rotated.float() * sin).to(x.dtype)

    return rotate(q), rotate(k)
