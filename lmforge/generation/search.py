"""Autoregressive decoding: greedy and sampling (temperature, top-k, top-p), and beam search with
one implementation for decoder-only and encoder-decoder models (`beam_search`,
`beam_search_seq2seq`).

Prompts of different lengths are left-padded so that every row's next token sits in the last column;
position ids count only real tokens (as in HF transformers), so a padded row sees the same positions
as the same prompt alone. With `use_cache` the prompt is run once and each step feeds one token
through the KV cache; without it every step recomputes the whole sequence (the reference the
cache is tested against).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from lmforge.config.model import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.layers.kv_cache import KVCache
from lmforge.models.lm import DecoderModel, EncoderDecoderModel


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


def cut_at_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """Generated tokens up to (not including) the first EOS; decoding pads finished rows with it."""
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


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
    _check_length(model.config, T, sampling.max_new_tokens)
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


# ---------------------------------------------------------------- encoder-decoder models


def decoder_start_id(config: ModelConfig) -> int:
    """The token a seq2seq decoder starts from (T5: <pad>, BART: </s>), as the model configuration
    stores it since its run was created or converted (`tokens.decoder_start_id`)."""
    start = config.tokens.decoder_start_id
    if start is None:
        raise LmforgeError(
            "the model names no decoder start token (tokens.decoder_start_id in its "
            "model_config.json); set it to the id its decoder was trained to start from"
        )
    return start


def _decoder_log_probs(
    model: EncoderDecoderModel,
    ids: torch.Tensor,
    memory: torch.Tensor,
    memory_mask: torch.Tensor | None,
    cache: KVCache | None,
) -> torch.Tensor:
    """Log-probabilities (B, V) of the token after (B, T) decoder `ids`: with a cache only the last
    token is fed (earlier ones are cached); without, the whole prefix is recomputed."""
    step_ids = ids[:, -1:] if cache is not None and cache.length > 0 else ids
    output = model(
        decoder_input_ids=step_ids, memory=memory, attention_mask=memory_mask, cache=cache
    )
    return output.logits[:, -1].float().log_softmax(dim=-1)


@torch.no_grad()
def generate_seq2seq(
    model: EncoderDecoderModel,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    sampling: SamplingConfig,
    decoder_start_id: int,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Greedy or sampled decoding: encode (B, S) inputs once, then decode from `decoder_start_id`;
    returns decoder ids (B, 1 + N), N <= max_new_tokens, the start token first. The decoder's
    self-attention keys/values go through the KV cache, the cross-attention ones are computed from
    the encoder output at the first step and kept in `cache.cross`."""
    device = model.token_embed.weight.device
    input_ids = input_ids.to(device)
    mask = None if attention_mask is None else attention_mask.to(device)
    was_training = model.training
    model.eval()
    memory = model.hidden_states(input_ids, attention_mask=mask)
    B = input_ids.shape[0]
    cache = model.new_cache(B, sampling.max_new_tokens) if use_cache else None
    ids = torch.full((B, 1), decoder_start_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for _ in range(sampling.max_new_tokens):
        log_probs = _decoder_log_probs(model, ids, memory, mask, cache)
        next_token = choose_next_token(log_probs, sampling, generator)
        if eos_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, eos_id), next_token)
            finished |= next_token == eos_id
        ids = torch.cat([ids, next_token[:, None]], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return ids


@dataclass(frozen=True, kw_only=True)
class BeamConfig:
    num_beams: int = 4
    max_new_tokens: int = 100
    length_penalty: float = 1.0
    """Finished hypotheses are ranked by sum of log-probabilities / length ** length_penalty."""
    early_stopping: bool = False
    """True: stop once num_beams hypotheses are finished; False: once no running beam can beat the
    worst finished one at the current length (transformers' heuristic)."""
    no_repeat_ngram_size: int = 0
    """Forbid any n-gram of this size from appearing twice in a hypothesis; 0 disables."""

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise LmforgeError(f"--num-beams must be at least 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise LmforgeError("--max-new-tokens must be at least 1")
        if self.no_repeat_ngram_size < 0:
            raise LmforgeError("--no-repeat-ngram-size must be >= 0 (0 = off)")


def ban_repeated_ngrams(log_probs: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    """Set to -inf the log-probability of every token that would complete an n-gram of `size`
    already present in its row (transformers' NoRepeatNGramLogitsProcessor). log_probs: (N, V),
    ids: (N, T)."""
    T = ids.shape[1]
    if size == 0 or T + 1 < size:
        return log_probs
    rows = ids.tolist()
    for row, tokens in enumerate(rows):
        prefix = tuple(tokens[T - size + 1 :])
        banned = [
            tokens[i + size - 1]
            for i in range(T - size + 1)
            if tuple(tokens[i : i + size - 1]) == prefix
        ]
        if banned:
            log_probs[row, banned] = float("-inf")
    return log_probs


@torch.no_grad()
def beam_search_seq2seq(
    model: EncoderDecoderModel,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    beam: BeamConfig,
    decoder_start_id: int,
    eos_id: int,
    pad_id: int,
    use_cache: bool = True,
) -> torch.Tensor:
    """Beam search over the decoder of an encoder-decoder model (`_beam_search`): encode (B, S)
    inputs once; returns the best hypothesis per input, (B, 1 + N) decoder ids from the start
    token, padded with `pad_id`."""
    device = model.token_embed.weight.device
    K, B = beam.num_beams, input_ids.shape[0]
    was_training = model.training
    model.eval()
    flat_ids = input_ids.to(device).repeat_interleave(K, dim=0)
    mask = None if attention_mask is None else attention_mask.to(device).repeat_interleave(K, 0)
    memory = model.hidden_states(flat_ids, attention_mask=mask)
    cache = model.new_cache(B * K, 1 + beam.max_new_tokens) if use_cache else None
    start = torch.full((B, 1), decoder_start_id, dtype=torch.long, device=device)
    output = _beam_search(
        lambda ids: _decoder_log_probs(model, ids, memory, mask, cache),
        start,
        beam=beam,
        eos_id=eos_id,
        pad_id=pad_id,
        cache=cache,
    )
    model.train(was_training)
    return output


@torch.no_grad()
def beam_search(
    model: DecoderModel,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    beam: BeamConfig,
    eos_id: int,
    pad_id: int,
    use_cache: bool = True,
) -> torch.Tensor:
    """Beam search continuing (B, T) left-padded prompts of a decoder-only model (`_beam_search`,
    as transformers' `generate(num_beams=...)`); returns the best hypothesis per prompt,
    (B, T + N), the prompt first, padded with `pad_id`."""
    device = model.token_embed.weight.device
    K, (B, T) = beam.num_beams, input_ids.shape
    _check_length(model.config, T, beam.max_new_tokens)
    was_training = model.training
    model.eval()
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    flat_mask = mask.to(device).repeat_interleave(K, dim=0)
    cache = model.new_cache(B * K, T + beam.max_new_tokens) if use_cache else None
    output = _beam_search(
        partial(_prompt_log_probs, model, flat_mask, cache),
        input_ids.to(device),
        beam=beam,
        eos_id=eos_id,
        pad_id=pad_id,
        cache=cache,
    )
    model.train(was_training)
    return output


def _check_length(config: ModelConfig, prompt_len: int, max_new_tokens: int) -> None:
    """Refuse a prompt and continuation longer than the model's positions."""
    limit = config.max_seq_len
    if limit is not None and prompt_len + max_new_tokens > limit:
        raise LmforgeError(
            f"the prompt ({prompt_len} tokens) plus --max-new-tokens ({max_new_tokens}) exceeds "
            f"the model's {limit} positions; lower --max-new-tokens or shorten the prompt"
        )


def _prompt_log_probs(
    model: DecoderModel, prompt_mask: torch.Tensor, cache: KVCache | None, ids: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities (N, V) of the token after (N, L) ids that continue left-padded prompts
    with mask `prompt_mask` (N, P): positions count real tokens only (as `generate`); with a cache
    the prompt is fed once and then only the last token."""
    generated = ids.shape[1] - prompt_mask.shape[1]
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(ids.shape[0], generated)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if cache is not None and cache.length > 0:
        ids, positions = ids[:, -1:], positions[:, -1:]
    is_padded = not bool(prompt_mask.all())  # without padding the unmasked attention path applies
    output = model(
        ids, attention_mask=mask if is_padded else None, position_ids=positions, cache=cache
    )
    return output.logits[:, -1].float().log_softmax(dim=-1)


def _beam_search(
    next_log_probs: Callable[[torch.Tensor], torch.Tensor],
    prompt: torch.Tensor,
    *,
    beam: BeamConfig,
    eos_id: int,
    pad_id: int,
    cache: KVCache | None,
) -> torch.Tensor:
    """Beam search (transformers' vectorised `_beam_search`, same scores and stopping rules) after
    (B, P) `prompt` ids (the decoder start token, or a decoder-only prompt): each step extends every
    running beam by every token (`next_log_probs`: (B * K, L) ids -> (B * K, V)), keeps the
    2 * num_beams best continuations, moves those ending in EOS (among the best num_beams) to the
    finished set and continues the best num_beams others; the cache rows follow their beams
    (`KVCache.reorder`). Scores are normalised by the generated length (the prompt excluded, as
    transformers' `decoder_prompt_len`). Returns (B, P + N), padded with `pad_id`."""
    device = prompt.device
    K, (B, P) = beam.num_beams, prompt.shape
    keep = 2 * K
    max_len = P + beam.max_new_tokens
    running = torch.full((B, K, max_len), pad_id, dtype=torch.long, device=device)
    running[:, :, :P] = prompt[:, None]
    finished_ids = running.clone()
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -1e9  # all beams start equal: only the first one may expand
    finished_scores = torch.full((B, K), -1e9, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    top_k_mask = torch.arange(keep, device=device) < K
    finished_lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    for cur_len in range(P, max_len):
        flat = running[:, :, :cur_len].reshape(B * K, cur_len)
        log_probs = ban_repeated_ngrams(next_log_probs(flat), flat, beam.no_repeat_ngram_size)
        V = log_probs.shape[-1]
        totals = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_scores, top_index = totals.topk(keep, dim=1)
        source_beam, token = top_index // V, top_index % V
        candidates = running.gather(1, source_beam[:, :, None].expand(-1, -1, max_len)).clone()
        candidates[:, :, cur_len] = token
        hits_stop = (token == eos_id) | (cur_len + 1 >= max_len)
        # Running beams for the next step: the best K continuations that did not stop.
        continuing = (top_scores - hits_stop.float() * 1e9).topk(K, dim=1)
        running = candidates.gather(1, continuing.indices[:, :, None].expand(-1, -1, max_len))
        running_scores = continuing.values
        source = source_beam.gather(1, continuing.indices)
        # Finished hypotheses: merge the stopping continuations among the top K into the set.
        normalised = top_scores / ((cur_len + 1 - P) ** beam.length_penalty)
        full = is_finished.all(dim=1, keepdim=True) & beam.early_stopping
        valid = hits_stop & top_k_mask & improvable & ~full
        normalised = torch.where(valid, normalised, normalised - 1e9)
        merged_scores = torch.cat([finished_scores, normalised], dim=1)
        best = merged_scores.topk(K, dim=1).indices
        finished_scores = merged_scores.gather(1, best)
        merged = torch.cat([finished_ids, candidates], dim=1)
        finished_ids = merged.gather(1, best[:, :, None].expand(-1, -1, max_len))
        is_finished = torch.cat([is_finished, valid], dim=1).gather(1, best)
        new_lengths = torch.full_like(token, cur_len + 1)
        finished_lengths = torch.cat([finished_lengths, new_lengths], dim=1).gather(1, best)
        if cache is not None:
            offsets = torch.arange(B, device=device)[:, None] * K
            cache.reorder((source + offsets).reshape(-1))
        # Can a running beam still beat the worst finished one (at the current length)?
        best_running = running_scores[:, :1] / ((cur_len + 1 - P) ** beam.length_penalty)
        all_done = is_finished.all(dim=1, keepdim=True)
        worst = torch.where(all_done, finished_scores.min(dim=1, keepdim=True).values, -1e9)
        improvable = improvable & (best_running > worst)
        if not bool(improvable.any()) or (beam.early_stopping and bool(is_finished.all())):
            break
        if bool(hits_stop.all()):
            break
    return finished_ids[:, 0, : int(finished_lengths[:, 0].max())]
