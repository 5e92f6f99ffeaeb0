"""`lmforge fill-mask RUN_OR_CHECKPOINT TEXT`: the most likely tokens at each mask, with
probabilities, as the Hugging Face fill-mask pipeline reports them (score, token, sequence)."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

import torch

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer
    from lmforge.models.lm import EncoderModel

# Both spellings are accepted whatever the tokenizer: they are rewritten to its own mask token.
_MASK_SPELLINGS = re.compile(r"\s*(\[MASK\]|<mask>)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fill-mask",
        help="predict masked tokens with a trained encoder",
        description=(
            'Predict the tokens hidden by [MASK] or <mask>, e.g. "The capital of France is '
            '[MASK]." Prints the top-k tokens of each mask with their probabilities.'
        ),
    )
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("text", metavar="TEXT", help="text with one or more [MASK] / <mask>")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.models.lm import EncoderModel
    from lmforge.models.pretrained import load_pretrained

    if args.top_k < 1:
        raise LmforgeError("--top-k must be at least 1")
    if not _MASK_SPELLINGS.search(args.text):
        raise LmforgeError(
            f"the text holds no mask token; write [MASK] or <mask> where a word should be "
            f'predicted, e.g. "The capital of France is [MASK]." (got {args.text!r})'
        )
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    if not isinstance(model, EncoderModel) or tokenizer.mask_id is None:
        raise LmforgeError(
            f"fill-mask needs an encoder trained with masked language modeling; "
            f"{args.checkpoint} is a {model.config.family} model"
        )
    results = fill_mask(model, tokenizer, args.text, top_k=args.top_k)
    for index, predictions in enumerate(results):
        if len(results) > 1:
            print(f"mask {index + 1}:")
        print(f"{'score':>8}  {'token':<16} sequence")
        for score, token, sequence in predictions:
            print(f"{score:8.4f}  {token:<16} {sequence}")
    return 0


@torch.no_grad()
def fill_mask(
    model: EncoderModel, tokenizer: Tokenizer, text: str, *, top_k: int
) -> list[list[tuple[float, str, str]]]:
    """For each mask in `text`, top_k (probability, token, completed text) tuples."""
    from lmforge.data.framing import framing_for

    mask_token = tokenizer.roles["mask"]
    # The space before a mask belongs to the predicted token with byte-level BPE (`Ġparis`), as
    # RoBERTa's <mask> strips it (lstrip); WordPiece ignores the space either way.
    ids = tokenizer.encode(_MASK_SPELLINGS.sub(mask_token, text))
    ids = framing_for(tokenizer, model.config.family).single(ids)
    limit = model.config.max_seq_len
    if limit is not None and len(ids) > limit:
        raise LmforgeError(f"the text is {len(ids)} tokens long; the model reads at most {limit}")
    input_ids = torch.tensor([ids])
    logits = model(input_ids).logits[0].float()  # (T, V)
    # Rows past the tokenizer's vocabulary (padding to a multiple of 64) are never predicted.
    logits[:, tokenizer.vocab_size :] = float("-inf")
    probabilities = logits.softmax(dim=-1)
    positions = (input_ids[0] == tokenizer.mask_id).nonzero().squeeze(1).tolist()
    results = []
    for position in positions:
        scores, tokens = probabilities[position].topk(top_k)
        predictions = []
        for score, token in zip(scores.tolist(), tokens.tolist(), strict=True):
            filled = list(ids)
            filled[position] = token
            sequence = tokenizer.decode(filled, skip_special_tokens=True)
            predictions.append((score, tokenizer.decode([token]).strip(), sequence))
        results.append(predictions)
    return results
