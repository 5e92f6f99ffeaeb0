"""The tokenizer of an exported folder: ours, framing texts as the exported model was trained to
read them, with the special-token settings of the original checkpoints' tokenizers.

lmforge frames texts itself (`lmforge.data.framing`) and keeps its tokenizer.json free of special
tokens; transformers' tokenizers add them in their post-processor. The exported copy gets one that
produces exactly our framing's ids (and BERT's token types):

    framing                  post-processor                     as the originals
    [CLS] a [SEP] (b [SEP])  TemplateProcessing, types 0 / 1    bert-base-uncased
    <s> a </s>(</s> b </s>)  RobertaProcessing (byte-level)     roberta-base, facebook/bart-base
    a </s> (b </s>)          TemplateProcessing                 t5-small
    a (b)                    the tokenizer's own (none)         gpt2, bigscience/bloom
    a (b)                    the tokenizer's own (none)         (Llama: see below)

Llama's own tokenizers (LlamaTokenizerFast: meta-llama, TinyLlama) put <s> before every text
(add_bos_token=True); SmolLM's adds nothing. lmforge's decoders, Llama presets included, are
trained on text read as it is (`lmforge.data.framing`), so an exported Llama frames as GPT-2 does:
adding <s> would feed the model a token it never saw in that place. A checkpoint converted from HF
keeps this framing too: prompts to a converted meta-llama model should then start with <s>.

A fine-tuned model is framed as its task framed it (GPT-2 classification: `</s> a </s>`). With
byte-level BPE the space before a word is part of the word's token, so `<mask>` strips the space
before it (`lstrip`, as roberta-base's tokenizer), which is what `lmforge fill-mask` does too.
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.data.framing import Framing
from lmforge.data.tokenizer import Tokenizer

HF_ROLES = {f"{role}_token": role for role in ("bos", "eos", "pad", "unk", "mask", "cls", "sep")}
"""transformers' special-token attribute -> our role."""


def _is_byte_level(data: dict[str, Any]) -> bool:
    pre_tokenizer = data.get("pre_tokenizer") or {}
    parts = pre_tokenizer.get("pretokenizers", [pre_tokenizer])
    return any(part.get("type") == "ByteLevel" for part in parts)


def _template(framing: Framing, tokenizer: Tokenizer) -> Any:
    """TemplateProcessing building `framing.join`'s ids and segment ids."""
    from tokenizers import processors

    def tokens(ids: tuple[int, ...], segment: int) -> list[str]:
        return [f"{tokenizer.inner.id_to_token(i)}:{segment}" for i in ids]

    second = int(framing.has_segments)
    start, end = tokens(framing.start, 0), tokens(framing.end, 0)
    single = [*start, "$A:0", *end]
    pair = [*start, "$A:0", *tokens(framing.middle, 0), f"$B:{second}",
            *tokens(framing.end, second)]  # fmt: skip
    ids = set(framing.start + framing.middle + framing.end)
    special = [(tokenizer.inner.id_to_token(i), i) for i in sorted(ids)]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def _post_processor(framing: Framing, tokenizer: Tokenizer, byte_level: bool) -> Any | None:
    """The post-processor adding `framing`'s special tokens; None when it adds none."""
    from tokenizers import processors

    if not (framing.start or framing.middle or framing.end):
        return None
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    shape = (framing.start, framing.middle, framing.end, framing.has_segments)
    if byte_level and shape == ((bos,), (eos, eos), (eos,), False):
        # RoBERTa's own, which also trims the spaces byte-level tokens carry off their offsets.
        name = tokenizer.inner.id_to_token
        return processors.RobertaProcessing(
            (name(eos), eos), (name(bos), bos), trim_offsets=True, add_prefix_space=False
        )
    return _template(framing, tokenizer)


def hf_tokenizer(tokenizer: Tokenizer, framing: Framing, *, max_length: int | None = None) -> Any:
    """A transformers `PreTrainedTokenizerFast` for `tokenizer` that frames texts as `framing`,
    returning token types only where the framing has segments (BERT)."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as BackendTokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.to_json())  # a copy: the run's own tokenizer stays as it is
    byte_level = _is_byte_level(data)
    mask = tokenizer.roles.get("mask")
    for entry in data.get("added_tokens", []):
        if byte_level and entry["content"] == mask:
            entry["lstrip"] = True
    inner = BackendTokenizer.from_str(json.dumps(data))
    processor = _post_processor(framing, tokenizer, byte_level)
    if processor is not None:
        inner.post_processor = processor
    roles: dict[str, Any] = {attr: tokenizer.roles[role] for attr, role in HF_ROLES.items()
                             if role in tokenizer.roles}  # fmt: skip
    if byte_level and mask is not None:  # else transformers re-adds it without lstrip on load
        roles["mask_token"] = AddedToken(mask, lstrip=True, special=True, normalized=False)
    names = ["input_ids", "token_type_ids", "attention_mask"]
    if not framing.has_segments:  # GPT-2 and BART would misread token types
        names.remove("token_type_ids")
    extra = {} if max_length is None else {"model_max_length": max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=inner, model_input_names=names, **roles, **extra
    )
