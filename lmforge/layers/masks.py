"""Padding, causal and combined attention masks, in the form scaled_dot_product_attention takes.

`attention_mask` is what SDPA gets as `attn_mask`: None (fast kernels, with `is_causal` for the
plain causal case), or an additive float mask (B|1, H|1, T, S) that carries the positional score
bias and a large negative value where attention is not allowed. A finite minimum, not -inf, keeps
rows whose keys are all masked (left padding) finite instead of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionMask:
    mask: torch.Tensor | None
    """Additive (B|1, H|1, T, S) mask, or None."""
    is_causal: bool
    """Let SDPA apply the causal mask itself (only when `mask` is None and there is no cache)."""


def build_attention_mask(
    *,
    query_len: int,
    key_len: int,
    is_causal: bool,
    key_padding: torch.Tensor | None,
    score_bias: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> AttentionMask:
    """Combine the causal rule, key padding and a score bias into one mask.

    Args:
        key_padding: (B, S) bool, True where a key may be attended; None when nothing is padded.
        score_bias: (B|1, H, T, S) positional bias; None for schemes without one.
    Queries are the last `query_len` of the `key_len` positions (earlier ones come from a KV cache).
    """
    past = key_len - query_len
    if key_padding is None and score_bias is None:
        if not is_causal or query_len == 1:
            return AttentionMask(None, False)
        if past == 0:
            return AttentionMask(None, True)
    allowed = torch.ones(1, 1, query_len, key_len, dtype=torch.bool, device=device)
    if is_causal:
        query_index = torch.arange(past, key_len, device=device)[:, None]
        allowed = allowed & (torch.arange(key_len, device=device)[None, :] <= query_index)
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, None, :].bool()
    bias = (
        torch.zeros((), dtype=dtype, device=device) if score_bias is None else score_bias.to(dtype)
    )
    mask = bias.masked_fill(~allowed, torch.finfo(dtype).min)
    return AttentionMask(mask, False)
