"""Token classification (`lmforge finetune tag`): named-entity recognition on CoNLL files.

Each sentence's words are joined with single spaces and tokenized as running text, so every
tokenizer sees what it saw in pretraining (byte-level BPE needs the leading space of non-first
words, WordPiece and unigram split on it); character offsets then map each piece to its word.
Only the FIRST piece of a word carries the word's label and is read at prediction time; the other
pieces are IGNORE_INDEX (BERT, Devlin et al. 2019, section 5.3):

    words     .     EU               rejects                         .
    pieces    <s>   E       U        Ġre    j      ect    s          </s>
    labels    -100  B-ORG   -100     O      -100   -100   -100       -100

Labels are BIO2 (every entity starts with B-); files in IOB1 (CoNLL-2003) or IOBES are converted on
reading and predictions are written back in the file's scheme. The metric is conlleval's entity F1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmforge.config.model import ModelConfig
from lmforge.data.conll import (
    TaggedSentence,
    detect_scheme,
    from_bio2,
    looks_like_conll,
    parse_conll,
    read_conll,
    read_text,
    to_bio2,
)
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.evaluation.seqeval import entity_scores
from lmforge.models.heads import IGNORE_INDEX, TaskHead, token_loss_sum
from lmforge.models.lm import LanguageModel
from lmforge.tasks.base import Task, pad_batch

logger = logging.getLogger(__name__)


@dataclass
class TaggingExample:
    words: list[str]
    tags: list[str]
    """Gold tags as written in the file; empty for prediction inputs without tags."""
    scheme: str | None
    """Tag scheme of the file ("iob1", "bio2", "iobes"); None: the training file's (plain text)."""


@dataclass
class _Encoded:
    input_ids: list[int]
    first_pieces: list[int]
    """Per word: the position of its first piece in input_ids; -1 where it has none (truncated)."""


class TaggingModel(nn.Module):
    """The backbone with a linear head on every position: (B, T) ids -> (B, T, C) label scores."""

    def __init__(self, backbone: LanguageModel, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        # dropout -> classifier, as every ...ForTokenClassification of transformers.
        self.head = TaskHead(backbone.config.d_model, num_labels, dropout=dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (1 = token): (B, T) -> logits (B, T, C)."""
        return self.head(self.backbone.hidden_states(input_ids, attention_mask=attention_mask))


class TaggingTask(Task):
    name = "tag"
    families = ("encoder", "decoder")
    metric = "f1"

    def __init__(self, options: Any, tokenizer: Tokenizer, model_config: ModelConfig) -> None:
        super().__init__(options, tokenizer, model_config)
        self.labels: list[str] = []
        """BIO2 labels, "O" first, then B-/I- of every entity type of the training file, sorted."""
        self.train_scheme = "bio2"
        # The position table bounds the sequence whatever the option says.
        self.max_length = min(options.max_length, model_config.max_seq_len or options.max_length)

    # --- data ---------------------------------------------------------------------------------

    def read(self, path: str) -> list[TaggingExample]:
        sentences = read_conll(path)
        if not sentences:
            raise LmforgeError(f"{path} holds no sentences; expected a CoNLL file (word ... tag)")
        return self._examples(sentences, path)

    def read_inputs(self, path: str) -> list[TaggingExample]:
        """A CoNLL file (the tag column optional) or plain text, one sentence per line."""
        text = read_text(path)
        if looks_like_conll(text):
            sentences = parse_conll(text, path, require_tags=False)
            if sentences and sentences[0].tags:
                return self._examples(sentences, path)
        else:
            sentences = [TaggedSentence(line.split(), []) for line in text.splitlines()]
            sentences = [s for s in sentences if s.words]
        if not sentences:
            raise LmforgeError(f"{path} holds no sentences to tag")
        return [TaggingExample(s.words, [], None) for s in sentences]

    def inputs_from_texts(self, texts: list[str]) -> list[TaggingExample]:
        """Each text is a sentence of words separated by spaces, as in a plain-text input file."""
        return [TaggingExample(text.split(), [], None) for text in texts]

    def _examples(self, sentences: list[TaggedSentence], path: str) -> list[TaggingExample]:
        scheme = self.options.scheme
        if scheme == "auto":
            scheme = detect_scheme(sentences)
            logger.info("%s: %s tags", path, scheme.upper())
        return [TaggingExample(s.words, s.tags, scheme) for s in sentences]

    def fit_labels(self, train: list[TaggingExample]) -> None:
        """Both B- and I- of every type seen, so a type whose training entities are all one word
        long can still be predicted as a longer entity."""
        kinds = {tag[2:] for e in train for tag in e.tags if tag != "O"}
        if not kinds:
            raise LmforgeError("the training file has no entity tags (every tag is O)")
        self.labels = ["O", *sorted(f"{prefix}-{kind}" for kind in kinds for prefix in "BI")]
        self.train_scheme = train[0].scheme or "bio2"

    def check_labels(self, examples: list[TaggingExample], path: str) -> None:
        known = set(self.labels)
        for example in examples:
            for tag in to_bio2(example.tags, example.scheme or self.train_scheme):
                if tag not in known:
                    raise LmforgeError(
                        f"tag {tag} in {path} never occurs in the training data; the model can "
                        f"only predict {', '.join(self.labels)}"
                    )

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "scheme": self.train_scheme}

    def load_state(self, state: dict[str, Any]) -> None:
        self.labels = list(state["labels"])
        self.train_scheme = state["scheme"]

    def features(self, examples: list[TaggingExample]) -> list[dict[str, list[int]]]:
        """Per sentence: input_ids and labels (the word's label id on its first piece)."""
        label_ids = {label: i for i, label in enumerate(self.labels)}
        encodings = self._encode([e.words for e in examples])
        features = []
        for example, encoded in zip(examples, encodings, strict=True):
            labels = [IGNORE_INDEX] * len(encoded.input_ids)
            tags = to_bio2(example.tags, example.scheme or self.train_scheme)
            for tag, position in zip(tags, encoded.first_pieces, strict=True):
                if position >= 0:
                    labels[position] = label_ids[tag]
            features.append({"input_ids": encoded.input_ids, "labels": labels})
        return features

    def collate(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (1 = token) and labels (IGNORE_INDEX on padding): (B, T)."""
        batch = self._inputs([f["input_ids"] for f in features])
        batch["labels"] = pad_batch([f["labels"] for f in features], IGNORE_INDEX)
        return batch

    def _inputs(self, input_ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask (1 = token), right-padded: (B, T)."""
        pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        return {
            "input_ids": pad_batch(input_ids, pad_id),
            "attention_mask": pad_batch([[1] * len(ids) for ids in input_ids], 0),
        }

    def _encode(self, sentences: list[list[str]]) -> list[_Encoded]:
        """Tokenize sentences as running text, framed (GPT-2: as they are); at most max_length
        ids."""
        texts = [" ".join(words) for words in sentences]
        encodings = self.tokenizer.inner.encode_batch(texts, add_special_tokens=False)
        budget = max(self.max_length - self.framing.special_count(), 0)
        encoded = []
        for words, encoding in zip(sentences, encodings, strict=True):
            owners = _char_owners(words)
            first_pieces = [-1] * len(words)
            for position, (start, _) in enumerate(encoding.offsets[:budget]):
                word = owners[min(start, len(owners) - 1)]
                if first_pieces[word] < 0:
                    first_pieces[word] = len(self.framing.start) + position
            input_ids = self.framing.single(encoding.ids, self.max_length)
            encoded.append(_Encoded(input_ids, first_pieces))
        return encoded

    # --- model --------------------------------------------------------------------------------

    def build_model(self, backbone: LanguageModel) -> TaggingModel:
        dropout = max(self.model_config.dropout, 0.1)  # BERT's token-classification dropout
        return TaggingModel(backbone, len(self.labels), dropout)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy over the first pieces of the words, averaged."""
        logits = model(batch["input_ids"], batch["attention_mask"])  # (B, T, C)
        loss_sum, count = token_loss_sum(logits.flatten(0, 1), batch["labels"].flatten())
        return loss_sum / count.clamp(min=1)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, examples: list[TaggingExample], batch_size: int
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Entity precision/recall/F1 (conlleval) and tag accuracy, computed in BIO2; rows in the
        file's scheme: {"words", "tags" (gold), "predicted"}."""
        predicted = self._predict_tags(model, [e.words for e in examples], batch_size)
        gold = [to_bio2(e.tags, e.scheme or self.train_scheme) for e in examples]
        rows = [
            {"words": e.words, "tags": e.tags, "predicted": self._in_scheme(tags, e)}
            for e, tags in zip(examples, predicted, strict=True)
        ]
        scores = entity_scores(gold, predicted)
        # Per type only F1 (f1_PER, ...): precision and recall of each type would triple the
        # metrics logged at every evaluation for little insight.
        keep = ("precision", "recall", "f1", "accuracy")
        return {k: v for k, v in scores.items() if k in keep or k.startswith("f1_")}, rows

    @torch.no_grad()
    def predict(
        self, model: nn.Module, examples: list[TaggingExample], batch_size: int
    ) -> list[dict[str, Any]]:
        predicted = self._predict_tags(model, [e.words for e in examples], batch_size)
        return [
            {"words": e.words, "predicted": self._in_scheme(tags, e)}
            for e, tags in zip(examples, predicted, strict=True)
        ]

    def _in_scheme(self, bio2_tags: list[str], example: TaggingExample) -> list[str]:
        return from_bio2(bio2_tags, example.scheme or self.train_scheme)

    def _predict_tags(
        self, model: nn.Module, sentences: list[list[str]], batch_size: int
    ) -> list[list[str]]:
        """BIO2 tags of every word: the best label of its first piece; O for truncated words."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        encoded = self._encode(sentences)
        # Batches of similar lengths waste little on padding; results go back in input order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        predicted: list[list[str]] = [[] for _ in encoded]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self._inputs([encoded[i].input_ids for i in chunk])
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            best = logits.argmax(dim=-1).tolist()  # (B, T)
            for i, row in zip(chunk, best, strict=True):
                pieces = encoded[i].first_pieces
                predicted[i] = [self.labels[row[p]] if p >= 0 else "O" for p in pieces]
        model.train(was_training)
        return predicted


def _char_owners(words: list[str]) -> list[int]:
    """For each character of " ".join(words), the index of its word; a space belongs to the word
    after it, where byte-level BPE and Metaspace pieces ("Ġword", "▁word") start."""
    owners: list[int] = []
    for index, word in enumerate(words):
        owners.extend([index] * (len(word) + (index > 0)))
    return owners
