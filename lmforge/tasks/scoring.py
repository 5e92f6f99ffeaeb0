"""`sentence_log_likelihoods`: how likely a pretrained model of any family finds each of a list of
sentences, with no training: the score minimal-pair evaluation compares (`tasks/minimal_pairs.py`).

Each family is asked the question its pretraining taught it to answer, and every score sums the
log-probabilities of the sentence's own tokens (never of the framing around them):

    decoder (GPT-2, BLOOM)   sum_t log p(w_t | separator, w_<t): the first token is conditioned on
                             the separator that ends every document in the packed pretraining
                             stream (data/prepare.py, objectives/clm.py), so it is scored as the
                             start of a document
    encoder (BERT, RoBERTa)  pseudo-log-likelihood (Salazar et al. 2020, "Masked Language Model
                             Scoring"): sum_t log p(w_t | the framed sentence with w_t masked); the
                             masked copies of many sentences share one forward pass
    encoder-decoder          log-likelihood of the sentence as the decoder's target, given a source
                             that stands for the whole text:
        T5    source <extra_id_0> </s>     decoder <pad> <extra_id_0> w_1 ... w_n
              A span-corruption target lists each sentinel followed by the tokens it replaced
              (objectives/span_corruption.py); with one sentinel for the whole text ("reconstruct
              everything") the matching target is <extra_id_0> sentence </s>.
        BART  source <s> <mask> </s>       decoder </s> <s> w_1 ... w_n
              One text-infilling mask for the whole text, not the sentence itself: given the
              sentence, the decoder mostly copies it (70% of pretraining targets are visible in
              the source), so each sentence of a pair would be scored under a different input
              and both near zero, measuring copying rather than acceptability. With the all-mask
              source every sentence gets the same input and the decoder acts as a language model:
              the question T5 is asked with its sentinel and GPT-2 with its separator.
    The target's first token (<extra_id_0>, <s>) scores the same for every sentence and its
    closing </s> is left out, as the other families score no framing; so only w_1 ... w_n count.

Logits of ids past the tokenizer's vocabulary (the model's vocabulary is padded to a multiple of
64) are excluded from every softmax: those ids never occur in text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.data.framing import framing_for
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.generation.search import decoder_start_id
from lmforge.models.lm import DecoderModel, EncoderDecoderModel, EncoderModel, LanguageModel
from lmforge.tasks.base import pad_batch
from lmforge.tasks.zero_shot import continuation_log_probs

# --- framing --------------------------------------------------------------------------------------


def _decoder_context(tokenizer: Tokenizer) -> list[int]:
    """What a decoder reads before a sentence: the separator that precedes every document."""
    return [tokenizer.separator_id]


def _encoder_frame(tokenizer: Tokenizer, ids: list[int]) -> list[int]:
    """A sentence framed as in MLM pretraining: [CLS] ids [SEP] (BERT), <s> ids </s> (RoBERTa)."""
    if tokenizer.mask_id is None:
        raise LmforgeError(
            "pseudo-log-likelihood needs a mask token, which this encoder's tokenizer lacks; "
            "score a model pretrained with masked language modeling"
        )
    framing = framing_for(tokenizer, "encoder")
    framing.require_enclosing("pseudo-log-likelihood")
    return framing.single(ids)


def _seq2seq_frame(model: EncoderDecoderModel, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """(source, decoder prefix before the sentence): T5's single sentinel or BART's single mask
    (see the module docstring), the decoder starting from the token stored with the model."""
    start = decoder_start_id(model.config)
    if tokenizer.sentinel_ids and tokenizer.eos_id is not None:
        sentinel = tokenizer.sentinel_ids[0]  # <extra_id_0>
        return [sentinel, tokenizer.eos_id], [start, sentinel]
    if None not in (tokenizer.bos_id, tokenizer.mask_id, tokenizer.eos_id):
        return [tokenizer.bos_id, tokenizer.mask_id, tokenizer.eos_id], [start, tokenizer.bos_id]
    raise LmforgeError(
        "an encoder-decoder scores sentences from a source of T5's <extra_id_0> or BART's <mask>, "
        "and this model's tokenizer has neither; score a model pretrained with span corruption "
        "or BART denoising"
    )


# --- scoring --------------------------------------------------------------------------------------


@torch.no_grad()
def sentence_log_likelihoods(
    model: LanguageModel, tokenizer: Tokenizer, texts: Sequence[str], *, batch_size: int = 64
) -> list[float]:
    """The log-likelihood of each text under `model` (see the module docstring for each family).

    batch_size: sequences per forward pass: sentences for decoders and encoder-decoders, masked
    copies of sentences (one per token) for encoders."""
    sentences = tokenizer.encode_batch(list(texts))
    scorer = _SCORERS[model.config.family]
    return scorer(model, tokenizer, sentences, batch_size)


def _causal_scores(
    model: DecoderModel, tokenizer: Tokenizer, sentences: list[list[int]], batch_size: int
) -> list[float]:
    context = _decoder_context(tokenizer)
    _check_fits(model, [len(context) + len(ids) for ids in sentences])
    log_probs = continuation_log_probs(
        model,
        [(context, ids) for ids in sentences],
        vocab_size=tokenizer.vocab_size,
        batch_size=batch_size,
    )
    return [float(part.double().sum()) for part in log_probs]


def _pseudo_log_likelihoods(
    model: EncoderModel, tokenizer: Tokenizer, sentences: list[list[int]], batch_size: int
) -> list[float]:
    framed = [_encoder_frame(tokenizer, ids) for ids in sentences]
    _check_fits(model, [len(row) for row in framed])
    # One row per (sentence, token): the sentence with that token masked. Similar lengths share a
    # batch, so little compute goes to padding.
    rows = [(i, t) for i, row in enumerate(framed) for t in range(1, len(row) - 1)]
    rows.sort(key=lambda row: len(framed[row[0]]))
    device = model.token_embed.weight.device
    totals = torch.zeros(len(sentences), dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        index = torch.arange(len(chunk))
        sentence = torch.tensor([i for i, _ in chunk])
        position = torch.tensor([t for _, t in chunk])
        input_ids = pad_batch([framed[i] for i, _ in chunk], tokenizer.pad_id or 0)  # (B, T)
        attention_mask = pad_batch([[1] * len(framed[i]) for i, _ in chunk], 0)  # (B, T)
        targets = input_ids[index, position]  # (B,)
        input_ids[index, position] = tokenizer.mask_id
        hidden = model.hidden_states(input_ids.to(device), attention_mask=attention_mask.to(device))
        # Project only the masked position of each row onto the vocabulary.
        logits = model.lm_head(hidden[index, position.to(device)], model.token_embed.weight)
        scores = _token_log_probs(logits, targets.to(device), tokenizer.vocab_size)  # (B,)
        totals.index_add_(0, sentence, scores.double().cpu())
    return totals.tolist()


def _target_log_likelihoods(
    model: EncoderDecoderModel, tokenizer: Tokenizer, sentences: list[list[int]], batch_size: int
) -> list[float]:
    source, prefix = _seq2seq_frame(model, tokenizer)
    _check_fits(model, [len(prefix) + len(ids) for ids in sentences])
    device = model.token_embed.weight.device
    # Every sentence has the same source: encode it once.
    memory = model.hidden_states(torch.tensor([source], device=device))  # (1, S, D)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    results = [0.0] * len(sentences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        # Right padding needs no mask in the causal decoder: real tokens never look right.
        decoder_ids = pad_batch([prefix + sentences[i] for i in chunk], tokenizer.pad_id or 0)
        decoder_ids = decoder_ids.to(device)  # (B, T)
        logits = model(
            decoder_input_ids=decoder_ids, memory=memory.expand(len(chunk), -1, -1)
        ).logits  # (B, T, V)
        # Position t predicts token t + 1: the sentence's tokens from positions
        # len(prefix) - 1 ... len(prefix) + n - 2.
        row, position, lengths = [], [], []
        for b, i in enumerate(chunk):
            row += [b] * len(sentences[i])
            position += range(len(prefix) - 1, len(prefix) + len(sentences[i]) - 1)
            lengths.append(len(sentences[i]))
        targets = decoder_ids[row, [p + 1 for p in position]]  # (M,)
        scores = _token_log_probs(logits[row, position], targets, tokenizer.vocab_size).cpu()
        for i, part in zip(chunk, scores.split(lengths), strict=True):
            results[i] = float(part.double().sum())
    return results


_SCORERS = {
    "decoder": _causal_scores,
    "encoder": _pseudo_log_likelihoods,
    "encoder_decoder": _target_log_likelihoods,
}


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """logits (M, V), targets (M,) -> log p(target) (M,) over the tokenizer's `vocab_size` ids."""
    log_probs = logits[:, :vocab_size].float().log_softmax(dim=-1)
    return log_probs.gather(1, targets[:, None]).squeeze(1)


def _check_fits(model: LanguageModel, lengths: list[int]) -> None:
    """Refuse a framed sentence longer than the model's positions (`lengths`: framed lengths)."""
    limit = model.config.max_seq_len
    longest = max(lengths, default=0)
    if limit is not None and longest > limit:
        raise LmforgeError(
            f"a sentence is {longest} tokens long with its framing; the model reads at most "
            f"{limit}: shorten it or score it with a model of more positions"
        )
