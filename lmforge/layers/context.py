"""ForwardContext: what every block of one stack's forward pass shares, built once by the stack.

A stack turns its inputs (padding mask, position ids, KV cache, encoder output) into the forms its
blocks consume, once per forward pass, and hands the same context to every block and from there to
its attention sublayers, instead of threading each value through as a keyword argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.kernels.unpadding import Unpadded
from lmforge.layers.kv_cache import KVCache
from lmforge.layers.masks import AttentionMask
from lmforge.layers.positions import Rotary


@dataclass(frozen=True)
class ForwardContext:
    mask: AttentionMask
    """Self-attention mask: the causal rule, key padding and the positional score bias (hook 3)
    over cached and new keys, in one additive mask."""
    rotary: Rotary | None = None
    """cos/sin that rotate queries and keys (hook 2); None for schemes without rotation."""
    cache: KVCache | None = None
    """Keys and values of earlier positions (incremental decoding); layers index it by their own
    position in the stack."""
    memory: torch.Tensor | None = None
    """(B, S, D) encoder output for cross-attention (None once its keys/values are cached)."""
    memory_mask: AttentionMask | None = None
    """Cross-attention mask over the encoder positions; None in stacks without cross-attention."""
    unpadded: Unpadded | None = None
    """Where the real tokens sit when the blocks run on (N, D) real tokens instead of (B, T, D)."""
