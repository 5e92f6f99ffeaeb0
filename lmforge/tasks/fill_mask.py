"""Fill masks with an encoder pretrained by masked language modeling: the most likely tokens at
each mask with their probabilities, as the Hugging Face fill-mask pipeline reports them (score,
token, sequence). `lmforge fill-mask` and `lmforge.api.Pretrained.fill_mask` call `fill_mask`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from lmforge.data.framing import framing_for
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.models.lm import EncoderModel, LanguageModel

# Both spellings are accepted whatever the tokenizer: they are rewritten to its own mask token.
_MASK_SPELLINGS = re.compile(r"\s*(\[MASK\]|<mask>)")


@dataclass(frozen=True)
class MaskPrediction:
    score: float
    """Probability of the token at its mask."""
    token: str
    """The predicted token, as text."""
    sequence: str
    """The text with this token in place of the mask."""


def check_fill_mask_input(text: str, *, top_k: int) -> None:
    """Refuse a request that cannot be answered, before any model is loaded."""
    if top_k < 1:
        raise LmforgeError("--top-k must be at least 1")
    if not _MASK_SPELLINGS.search(text):
        raise LmforgeError(
            f"the text holds no mask token; write [MASK] or <mask> where a word should be "
            f'predicted, e.g. "The capital of France is [MASK]." (got {text!r})'
        )


@torch.no_grad()
def fill_mask(
    model: LanguageModel, tokenizer: Tokenizer, text: str, *, top_k: int, name: str = "the model"
) -> list[list[MaskPrediction]]:
    """For each mask in `text`, its top_k predictions, most likely first.

    name: what error messages call the model (its path)."""
    check_fill_mask_input(text, top_k=top_k)
    if not isinstance(model, EncoderModel) or tokenizer.mask_id is None:
        raise LmforgeError(
            f"fill-mask needs an encoder trained with masked language modeling; "
            f"{name} is a {model.config.family} model"
        )
    mask_token = tokenizer.roles["mask"]
    # The space before a mask belongs to the predicted token with byte-level BPE (`Ġparis`), as
    # RoBERTa's <mask> strips it (lstrip); WordPiece ignores the space either way.
    ids = tokenizer.encode(_MASK_SPELLINGS.sub(mask_token, text))
    ids = framing_for(tokenizer, model.config.family).single(ids)
    limit = model.config.max_seq_len
    if limit is not None and len(ids) > limit:
        raise LmforgeError(f"the text is {len(ids)} tokens long; the model reads at most {limit}")
    input_ids = torch.tensor([ids], device=model.token_embed.weight.device)
    logits = model(input_ids).logits[0].float().cpu()  # (T, V)
    # Rows past the tokenizer's vocabulary (padding to a multiple of 64) are never predicted.
    logits[:, tokenizer.vocab_size :] = float("-inf")
    probabilities = logits.softmax(dim=-1)
    positions = [t for t, token in enumerate(ids) if token == tokenizer.mask_id]
    results = []
    for position in positions:
        scores, tokens = probabilities[position].topk(top_k)
        predictions = []
        for score, token in zip(scores.tolist(), tokens.tolist(), strict=True):
            filled = list(ids)
            filled[position] = token
            sequence = tokenizer.decode(filled, skip_special_tokens=True)
            predictions.append(MaskPrediction(score, tokenizer.decode([token]).strip(), sequence))
        results.append(predictions)
    return results
