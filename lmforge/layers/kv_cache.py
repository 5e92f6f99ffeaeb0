"""A preallocated key/value cache for incremental decoding.

Keys and values of every layer live in one (L, B, H, max_len, Dh) buffer, so a decoding step writes
T new positions in place instead of concatenating (which would copy the whole history each step).
Cross-attention keys/values of an encoder-decoder model are computed once from the encoder output
and kept in `cross`.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_len: int,
        d_head: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (num_layers, batch_size, num_heads, max_len, d_head)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0
        """Positions already stored; the next forward pass writes from here."""
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self.positions = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        """Position ids of the stored keys (B, max_len), for score biases of later queries."""

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys/values (B, H, T, Dh) of `layer` after the cached ones; return all of them."""
        end = self.length + keys.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, {end} were asked for")
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def store_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Record the (B|1, T) position ids of the new positions; return those of all keys,
        (B, S)."""
        end = self.length + position_ids.shape[1]
        self.positions[:, self.length : end] = position_ids
        return self.positions[:, :end]

    def advance(self, num_positions: int) -> None:
        """Called once per forward pass, after every layer has stored its new positions."""
        self.length += num_positions

    def reorder(self, batch_indices: torch.Tensor) -> None:
        """Keep rows `batch_indices` (beam search): (B',) indices into the batch."""
        self.keys = self.keys.index_select(1, batch_indices)
        self.values = self.values.index_select(1, batch_indices)
        self.positions = self.positions.index_select(0, batch_indices)
        self.cross = [
            None if kv is None else (kv[0][batch_indices], kv[1][batch_indices])
            for kv in self.cross
        ]
