"""Autoregressive decoding for decoder-only models: greedy and sampling (temperature, top-k, top-p).

Prompts of different lengths are left-padded so that every row's next token sits in the last column;
position ids count only real tokens (as in HF transformers), so a padded row sees the same positions
as the same prompt alone. With `use_cache` the prompt is run once and each step feeds one token
through the KV cache; without it every step recomputes the whole sequence (the reference the
cache is
tested against).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.errors import LmforgeError
from lmforge.models.lm import DecoderModel


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    max_new_tokens: int = 100
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_k: int = 0
    """Sample among the k most likely tokens; 0 disables."""
    top_p: float = 1.0
    """Sample among the most likely tokens whose probabilities add up to p (nucleus); 1 disables."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise LmforgeError("--max-new-tokens must be at least 1")
        if self.temperature < 0:
            raise LmforgeError("--temperature must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise LmforgeError("--top-k must be >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            raise LmforgeError("--top-p must be in (0, 1]")


def choose_next_token(
    logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """logits: (B, V) of the last position -> (B,) next token ids."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already cover top_p (the first always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= sampling.top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probabilities = logits.softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> input_ids (B, T) and attention_mask (B, T), padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model: DecoderModel,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    sampling: SamplingConfig,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue (B, T) left-padded prompts; returns (B, T + N) with N <= max_new_tokens.

    A row that produced `eos_id` keeps emitting it; decoding stops when every row has.
    """
    B, T = input_ids.shape
    device = model.token_embed.weight.device
    ids = input_ids.to(device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(device)
    total = T + sampling.max_new_tokens
    limit = model.config.max_seq_len
    if limit is not None and total > limit:
        raise LmforgeError(
            f"the prompt ({T} tokens) plus --max-new-tokens ({sampling.max_new_tokens}) "
            "exceeds the "
            f"model's {limit} positions; lower --max-new-tokens or shorten the prompt"
        )
    was_training = model.training
    model.eval()
    cache = model.new_cache(B, total) if use_cache else None
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    step_ids, positions = ids, (mask.cumsum(-1) - 1).clamp(min=0)
    is_padded = not bool(mask.all())  # without padding the fast unmasked attention path applies
    for _ in range(sampling.max_new_tokens):
        output = model(
            step_ids,
            attention_mask=mask if is_padded else None,
            position_ids=positions,
            cache=cache,
        )
        next_token = choose_next_token(output.logits[:, -1], sampling, generator)
        if eos_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, eos_id), next_token)
            finished |= next_token == eos_id
        ids = torch.cat([ids, next_token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(next_token[:, None])], dim=1)
        next_position = positions[:, -1:] + 1
        if use_cache:
            step_ids, positions = next_token[:, None], next_position
        else:
            step_ids, positions = ids, torch.cat([positions, next_position], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return ids
