"""Causal language modeling: predict token t+1 from tokens 0..t.

Windows of T + 1 consecutive tokens from the packed stream (documents separated by EOS, so the model
learns where documents end) give inputs tokens[:-1] and labels tokens[1:]: every position is a
target.
"""

from __future__ import annotations

import torch


class CausalLM:
    name = "clm"
    families = ("decoder",)
    is_autoregressive = True
    target_fraction = 1.0

    def raw_length(self, seq_len: int) -> int:
        return seq_len + 1  # inputs and next-token labels come from the same T + 1 tokens

    def make_batch(
        self, windows: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """windows: (B, T + 1) -> input_ids (B, T), labels (B, T); nothing random."""
        return {"input_ids": windows[:, :-1], "labels": windows[:, 1:]}
