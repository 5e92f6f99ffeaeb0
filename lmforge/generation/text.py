"""Text in, text out: continue prompts with a decoder, or turn inputs into outputs with an
encoder-decoder, on top of the token-level searches of `generation/search.py`.

`lmforge generate` and the Python API (`lmforge.api.Pretrained.generate`) both call
`generate_text`; only how they show the result differs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from lmforge.data.framing import framing_for
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.generation.search import (
    BeamConfig,
    SamplingConfig,
    beam_search,
    beam_search_seq2seq,
    cut_at_eos,
    decoder_start_id,
    generate,
    generate_seq2seq,
    left_pad,
)
from lmforge.models.lm import DecoderModel, EncoderDecoderModel, LanguageModel


@dataclass(frozen=True)
class GeneratedText:
    texts: list[str]
    """One text per prompt: a decoder's prompt followed by its continuation, an encoder-decoder's
    output text."""
    num_new_tokens: int
    """Tokens generated over all prompts, up to each one's end of sequence."""
    seconds: float
    """Time spent decoding (tokenizing and detokenizing excluded)."""


def decoding_configs(
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    early_stopping: bool = False,
) -> tuple[SamplingConfig, BeamConfig | None]:
    """The search settings of `lmforge generate`'s flags (and the API's keywords of the same
    names): sampling/greedy settings, and beam settings when num_beams is not 1. Every value is
    checked whether or not the search uses it (a nonsense beam setting without beams is still a
    mistake worth one line)."""
    _check_finite(temperature=temperature, top_p=top_p, length_penalty=length_penalty)
    if no_repeat_ngram_size < 0:
        raise LmforgeError("--no-repeat-ngram-size must be >= 0 (0 = off)")
    if num_beams < 1:
        raise LmforgeError(f"--num-beams must be at least 1, got {num_beams}")
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
    )
    if num_beams == 1:
        return sampling, None
    beam = BeamConfig(
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )
    return sampling, beam


def _check_finite(**values: float) -> None:
    """NaN passes every comparison's negation and inf makes sampling uniform: refuse both."""
    for name, value in values.items():
        if not math.isfinite(value):
            flag = "--" + name.replace("_", "-")
            raise LmforgeError(f"{flag} must be a finite number, got {value}")


def generate_text(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompts: list[str],
    *,
    sampling: SamplingConfig,
    beam: BeamConfig | None = None,
    seed: int = 0,
    use_cache: bool = True,
    name: str = "the model",
) -> GeneratedText:
    """Generate from each of `prompts` (one row each; repeat a prompt for several samples).

    beam: beam search instead of greedy decoding or sampling when num_beams > 1.
    name: what error messages call the model (its path)."""
    if isinstance(model, EncoderDecoderModel):
        return _transduce(model, tokenizer, prompts, sampling, beam, seed, use_cache)
    if not isinstance(model, DecoderModel):
        raise LmforgeError(
            f"generate needs a decoder or encoder-decoder model; {name} is an "
            f"{model.config.family} model (try `lmforge fill-mask`)"
        )
    return _continue(model, tokenizer, prompts, sampling, beam, seed, use_cache)


def _continue(
    model: DecoderModel,
    tokenizer: Tokenizer,
    prompts: list[str],
    sampling: SamplingConfig,
    beam: BeamConfig | None,
    seed: int,
    use_cache: bool,
) -> GeneratedText:
    # An empty prompt starts a new document: the separator is what precedes every document.
    encoded = [tokenizer.encode(prompt) or [tokenizer.separator_id] for prompt in prompts]
    input_ids, attention_mask = left_pad(encoded, tokenizer.pad_id or 0)
    start = time.perf_counter()
    if beam is not None and beam.num_beams > 1:
        output = beam_search(
            model,
            input_ids,
            attention_mask=attention_mask,
            beam=beam,
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id,
            use_cache=use_cache,
        )
    else:
        output = generate(
            model,
            input_ids,
            attention_mask=attention_mask,
            sampling=sampling,
            eos_id=tokenizer.eos_id,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(seed),
        )
    seconds = time.perf_counter() - start
    continuations = [
        cut_at_eos(row[input_ids.shape[1] :].tolist(), tokenizer.eos_id) for row in output
    ]
    texts = [
        prompt + tokenizer.decode(tokens, skip_special_tokens=True)
        for prompt, tokens in zip(prompts, continuations, strict=True)
    ]
    return GeneratedText(texts, sum(map(len, continuations)), seconds)


def _transduce(
    model: EncoderDecoderModel,
    tokenizer: Tokenizer,
    prompts: list[str],
    sampling: SamplingConfig,
    beam: BeamConfig | None,
    seed: int,
    use_cache: bool,
) -> GeneratedText:
    """Encode each prompt as an input text and decode the output text."""
    if not all(prompts):
        raise LmforgeError("give the input text with --prompt")
    framing = framing_for(tokenizer, model.config.family)
    input_ids, attention_mask = _right_pad(
        [framing.single(ids) for ids in tokenizer.encode_batch(prompts)], tokenizer.pad_id or 0
    )
    start_id = decoder_start_id(model.config)
    start = time.perf_counter()
    if beam is not None and beam.num_beams > 1:
        output = beam_search_seq2seq(
            model,
            input_ids,
            attention_mask=attention_mask,
            beam=beam,
            decoder_start_id=start_id,
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id,
            use_cache=use_cache,
        )
    else:
        output = generate_seq2seq(
            model,
            input_ids,
            attention_mask=attention_mask,
            sampling=sampling,
            decoder_start_id=start_id,
            eos_id=tokenizer.eos_id,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(seed),
        )
    seconds = time.perf_counter() - start
    outputs = [cut_at_eos(row[1:].tolist(), tokenizer.eos_id) for row in output]  # after the start
    texts = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in outputs]
    return GeneratedText(texts, sum(map(len, outputs)), seconds)


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """input_ids (B, S) padded on the right, and their attention mask (B, S), None when no row is
    padded (the encoder's unmasked path, as for a single input)."""
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    if all(len(row) == width for row in rows):
        return input_ids, None
    return input_ids, torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
