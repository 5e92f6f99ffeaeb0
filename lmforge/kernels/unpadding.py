"""Padding removal: run a padded batch's token-wise layers on its real tokens only.

Everything in a block except attention's score computation works token by token (projections,
MLP, norms, residuals, dropout), so a stack can hold its hidden states as (N, D), the N real tokens
of a (B, T) batch, and lay them back out as (B, T, ...) only around the attention kernel (as
MosaicBERT and FlashAttention's varlen path do, with a padded kernel here). On fine-tuning batches
padded to their longest row the token-wise work shrinks by the padding fraction; copying rows out
and back in costs two gathers a layer, which only pays where enough of the batch is padding
(`MIN_PADDING_FRACTION`, measured in docs/benchmarks.md). The real tokens' outputs and every
gradient equal the padded path's (tests/kernels/test_unpadding.py); pads come out as zeros.

A stack decides whether its layers allow the (N, D) layout (no KV cache, no cross-attention);
`Unpadded.of` decides whether it pays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.kernels.dispatch import cpu_kernels_apply

# Remove padding when at least this fraction of a batch's positions is padding (measured: below
# it the row copies cost more than the token-wise work they save).
MIN_PADDING_FRACTION = 0.1


@dataclass(frozen=True)
class Unpadded:
    """Where the real tokens of a (B, T) batch sit among its B * T flattened positions."""

    indices: torch.Tensor
    """(N,) flat positions of the real tokens, in order."""
    batch: int
    length: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor, min_padding: float | None = None) -> Unpadded | None:
        """The layout of `attention_mask` (B, T), 1 = real token; None where less than
        `min_padding` (default MIN_PADDING_FRACTION) of it is padding (the padded path is then the
        faster one), under torch.compile (data-dependent shapes: compiled code keeps pads) and off
        the CPU (`kernels.dispatch`: the threshold was measured on CPUs, and finding the real
        tokens would make the host wait for the GPU every forward pass)."""
        if torch.compiler.is_compiling() or not cpu_kernels_apply(attention_mask.device):
            return None
        min_padding = MIN_PADDING_FRACTION if min_padding is None else min_padding
        B, T = attention_mask.shape
        indices = attention_mask.reshape(-1).nonzero().squeeze(1)
        real = indices.numel()
        if B * T - real < min_padding * B * T or real == 0:
            return None
        return cls(indices, B, T)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the real tokens' rows."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.indices)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding."""
        flat = x.new_zeros(self.batch * self.length, *x.shape[1:])
        return flat.index_copy(0, self.indices, x).view(self.batch, self.length, *x.shape[1:])
