"""Masked language modeling (Devlin et al. 2019, BERT) with RoBERTa's dynamic masking.

Sequences (RoBERTa's "full-sentences" packing, Liu et al. 2019, section 4.2): the window sampler
gives (B, T + 1) tokens of the packed stream, consecutive documents each followed by the
tokenizer's separator ([SEP] for WordPiece, </s> for byte-level BPE). An input row is

    [CLS] w_0 ... w_{T-3} [SEP]         (<s> ... </s> with a BPE tokenizer)

T tokens: the first T - 2 tokens of the window framed by the start and end tokens; the last three
window tokens are not used (the windows stay those of the causal LM, so data order, resume and
rank splitting are shared). Packed rows hold no padding, so no attention mask is needed.

Masking, fresh each time a sequence is seen (dynamic, RoBERTa section 4.1): each non-special token
is selected with probability `mask_rate` (never [CLS]/[SEP]/separators/padding); of the selected,
80% become the mask token, 10% a random non-special token and 10% stay unchanged; labels hold the
original token at selected positions and IGNORE_INDEX elsewhere. With whole-word masking the draw is
made once per word and shared by its pieces (BERT's whole-word-masking release), the 80/10/10 choice
stays per token as there. Every draw comes from the `generator` passed in, which the trainer seeds
from (run seed, step, global micro-batch index), so masks are reproducible and resume-exact.
"""

from __future__ import annotations

import torch

from lmforge.config.schema import ObjectiveSection
from lmforge.data.framing import framing_for
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.models.heads import IGNORE_INDEX

MASK_TOKEN_FRACTION = 0.8
"""Of the selected positions, the share replaced by the mask token (BERT section 3.1)."""
RANDOM_TOKEN_FRACTION = 0.1
"""Of the selected positions, the share replaced by a random token; the rest stay unchanged."""


def special_token_table(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) bool: True for every special token (roles, sentinels, added special tokens)."""
    table = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    role_ids = [tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id]
    role_ids += [tokenizer.mask_id, tokenizer.cls_id, tokenizer.sep_id, *tokenizer.sentinel_ids]
    added = tokenizer.inner.get_added_tokens_decoder()
    role_ids += [token_id for token_id, token in added.items() if token.special]
    table[[i for i in role_ids if i is not None]] = True
    return table


def word_start_table(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) bool: True where a token begins a word, from the vocabulary's continuation marks.

    WordPiece marks continuations (`##ing`); byte-level BPE and Metaspace mark word starts (`Ġ`, a
    space, and `▁`), so any other token continues the word before it (punctuation attached to a
    word included). Special tokens always stand alone.
    """
    model = tokenizer.inner.model
    prefix = getattr(model, "continuing_subword_prefix", None)
    vocab = tokenizer.inner.get_vocab(with_added_tokens=True)
    if type(model).__name__ == "WordPiece":

        def starts(token: str) -> bool:
            return not token.startswith(prefix or "##")

    elif any(token.startswith(("Ġ", "▁")) for token in vocab):

        def starts(token: str) -> bool:
            return token.startswith(("Ġ", "▁"))

    else:
        raise LmforgeError(
            "objective.whole_word_masking needs a WordPiece, byte-level BPE or unigram tokenizer "
            "(one that marks word boundaries); set --objective.whole_word_masking=false"
        )
    table = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    table[[token_id for token, token_id in vocab.items() if starts(token)]] = True
    return table | special_token_table(tokenizer)


class MaskedLM:
    name = "mlm"
    families = ("encoder",)
    is_autoregressive = False

    def __init__(self, settings: ObjectiveSection, tokenizer: Tokenizer, source: str) -> None:
        """`source` names the tokenizer in errors (the data directory it came with)."""
        if tokenizer.mask_id is None:
            raise LmforgeError(
                f"the tokenizer of {source} has no mask token, which masked language modeling "
                "needs; train one with `lmforge tokenizer train --kind wordpiece` (BERT) or "
                "`--kind bpe` (RoBERTa) and prepare the data with it"
            )
        self.mask_rate = settings.mask_rate
        self.target_fraction = settings.mask_rate
        self.mask_id = tokenizer.mask_id
        framing = framing_for(tokenizer, "encoder")
        framing.require_enclosing("masked language modeling")
        (self.start_id,), (self.end_id,) = framing.start, framing.end
        self.is_special = special_token_table(tokenizer)
        self.random_pool = (~self.is_special).nonzero().squeeze(1)
        self.word_start = word_start_table(tokenizer) if settings.whole_word_masking else None

    def raw_length(self, seq_len: int) -> int:
        # Windows as long as CLM's: data order, resume and rank splits are shared by both.
        return seq_len + 1

    def make_batch(
        self, windows: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """windows: (B, T + 1) -> input_ids (B, T) masked, labels (B, T)."""
        B, T = windows.shape[0], windows.shape[1] - 1
        if T < 3:
            raise LmforgeError(f"masked language modeling needs train.seq_len >= 3, got {T}")
        tokens = torch.empty(B, T, dtype=torch.long)
        tokens[:, 0], tokens[:, -1] = self.start_id, self.end_id
        tokens[:, 1:-1] = windows[:, : T - 2]
        input_ids, labels = self.mask(tokens, generator)
        return {"input_ids": input_ids, "labels": labels}

    def mask(
        self, tokens: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic 80/10/10 masking of (B, T) `tokens` -> (input_ids, labels), both (B, T)."""
        select_draw = torch.rand(tokens.shape, generator=generator)
        action_draw = torch.rand(tokens.shape, generator=generator)
        random_index = torch.randint(self.random_pool.numel(), tokens.shape, generator=generator)
        if self.word_start is not None:
            # Every piece takes the draw of its word's first piece: the position of the last word
            # start at or before it (special tokens count as word starts).
            positions = torch.arange(tokens.shape[1]).expand_as(tokens)
            first_piece = torch.where(self.word_start[tokens], positions, 0).cummax(dim=1).values
            select_draw = select_draw.gather(1, first_piece)
        selected = (select_draw < self.mask_rate) & ~self.is_special[tokens]
        labels = torch.where(selected, tokens, IGNORE_INDEX)
        to_mask = selected & (action_draw < MASK_TOKEN_FRACTION)
        to_random = (
            selected
            & (action_draw >= MASK_TOKEN_FRACTION)
            & (action_draw < MASK_TOKEN_FRACTION + RANDOM_TOKEN_FRACTION)
        )
        input_ids = torch.where(to_mask, self.mask_id, tokens)
        input_ids = torch.where(to_random, self.random_pool[random_index], input_ids)
        return input_ids, labels
