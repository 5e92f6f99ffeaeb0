"""Sentence and sentence-pair classification for every family.

    encoder          [CLS] a [SEP] (b [SEP])  -> pooler(first token) -> head   (BERT; RoBERTa:
                     <s> a </s></s> b </s>)   as BertForSequenceClassification
    decoder          </s> a (</s> b) </s>     -> hidden state of the last real token -> head
                     (GPT2ForSequenceClassification; the leading separator is what precedes every
                     document in pretraining)
    encoder-decoder  prefix a (b) </s>        -> the decoder generates the label's word + </s>
                     (T5; BART: <s> ... </s> around both, as every BART input and target)

The encoder and encoder-decoder framing is `lmforge.data.framing`'s.

Metrics: accuracy and macro-F1 (the checkpoint is chosen on accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.finetune import ClassifyOptions
from lmforge.config.model import ModelConfig
from lmforge.data.framing import Framing, shift_right
from lmforge.data.labelled import ClassificationExample, read_classification
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.evaluation.classification import accuracy, macro_f1
from lmforge.generation.search import SamplingConfig, decoder_start_id, generate_seq2seq
from lmforge.models.heads import IGNORE_INDEX, TaskHead
from lmforge.models.lm import LanguageModel
from lmforge.tasks.base import Task, pad_batch, to_model_device


@dataclass
class ClassificationFeature:
    input_ids: list[int]
    segment_ids: list[int]
    label: int
    """Index into the label set (encoder, decoder) — or -1 when unlabelled."""
    target_ids: list[int]
    """The label word's tokens + eos (encoder-decoder only)."""


class SequenceClassifier(nn.Module):
    """Backbone + a linear head on one vector per sequence: (B, T) ids -> (B, C) scores, shaped as
    the reference classes:

        encoder, head.pooler_dropout=after   pooler -> dropout -> head.proj
                                             (BertForSequenceClassification)
        encoder, head.pooler_dropout=around  dropout -> pooler -> dropout -> head.proj
                                             (RobertaClassificationHead: dense, tanh, out_proj)
        decoder                              head.proj, no bias, no dropout
                                             (GPT2/BloomForSequenceClassification's score)
    """

    def __init__(self, backbone: LanguageModel, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        cfg = backbone.config
        is_encoder = cfg.family == "encoder"
        around = is_encoder and cfg.head.pooler_dropout == "around"
        self.pooler_dropout = nn.Dropout(dropout) if around else nn.Identity()
        self.head = TaskHead(
            cfg.d_model,
            num_labels,
            dropout=dropout if is_encoder else None,
            bias=is_encoder,
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, segment_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.backbone.hidden_states(
            input_ids, attention_mask=attention_mask, segment_ids=segment_ids
        )
        if self.backbone.config.family == "encoder":
            # (B, D): tanh(dense(first token)); only the first token is dropped out.
            pooled = self.backbone.pooler(self.pooler_dropout(hidden[:, :1]))
        else:  # the last real token has seen the whole text through causal attention
            last = attention_mask.sum(dim=1) - 1  # (B,)
            pooled = hidden[torch.arange(hidden.shape[0]), last]
        return self.head(pooled)


class ClassificationTask(Task):
    name = "classify"
    families = ("encoder", "decoder", "encoder_decoder")
    metric = "accuracy"

    def __init__(self, options: ClassifyOptions, tokenizer: Tokenizer, model_config: ModelConfig):
        super().__init__(options, tokenizer, model_config)
        self.text_fields = [f.strip() for f in options.text_fields.split(",") if f.strip()]
        self.labels: list[str] = []
        self.words = _parse_label_words(options.label_words)
        self.is_generative = model_config.family == "encoder_decoder"
        self.max_length = min(options.max_length, model_config.max_seq_len or options.max_length)
        self.decoder_start_id = decoder_start_id(model_config) if self.is_generative else None
        if model_config.family == "encoder":
            self.framing.require_enclosing("sentence classification")  # the pooler reads [CLS]
        elif model_config.family == "decoder":
            # The head reads the last real token: each text is framed as a pretraining document,
            # the separator before and after it, so that token is always the separator.
            separator = (tokenizer.separator_id,)
            self.framing = Framing(start=separator, middle=separator, end=separator)
        for role in ("eos",) if self.is_generative else ():
            if getattr(tokenizer, f"{role}_id") is None:
                raise LmforgeError(f"the tokenizer has no {role} token, which {self.name} needs")

    # --- data ---------------------------------------------------------------------------------

    def read(self, path: str) -> list[ClassificationExample]:
        return read_classification(path, text_fields=self.text_fields, label_field=self._label())

    def read_inputs(self, path: str) -> list[ClassificationExample]:
        return read_classification(
            path, text_fields=self.text_fields, label_field=self._label(), labelled=False
        )

    def inputs_from_texts(self, texts: list[str]) -> list[ClassificationExample]:
        return [ClassificationExample((text,), None) for text in texts]

    def _label(self) -> str:
        return self.options.label_field

    def fit_labels(self, train: list[ClassificationExample]) -> None:
        """The label set: `task.labels` when given, else the training file's (numbers in numeric
        order); a training label outside the given set, or of another kind than the others, is
        refused (see `_check_label_kinds`)."""
        if self.options.labels:
            self.labels = [label.strip() for label in self.options.labels.split(",")]
            self.labels = [label for label in self.labels if label]
            self.check_labels(train, "the training file")
        else:
            _check_label_kinds(train)
            self.labels = sorted({e.label for e in train}, key=_natural_key)
        if len(self.labels) < 2:
            raise LmforgeError(f"the training data has only the label {self.labels}; need >= 2")
        missing = [label for label in self.labels if self.words and label not in self.words]
        if missing:
            raise LmforgeError(f"task.label_words gives no word for label {missing[0]!r}")

    def check_labels(self, examples: list[ClassificationExample], path: str) -> None:
        known = set(self.labels)
        given = "--task.labels" if self.options.labels else "the training labels"
        for example in examples:
            if example.label is not None and example.label not in known:
                raise LmforgeError(
                    f"{example.location or path}: label {example.label!r} is not one of {given} "
                    f"({', '.join(self.labels)}); fix the label, or list every label with "
                    "--task.labels=..."
                )

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "decoder_start_id": self.decoder_start_id}

    def load_state(self, state: dict[str, Any]) -> None:
        self.labels = list(state["labels"])
        self.decoder_start_id = state.get("decoder_start_id", self.decoder_start_id)

    def features(self, examples: list[ClassificationExample]) -> list[ClassificationFeature]:
        index = {label: i for i, label in enumerate(self.labels)}
        features = []
        for example in examples:
            ids, segments = self._encode(example.texts)
            label = -1 if example.label is None else index[example.label]
            target = []
            if self.is_generative and example.label is not None:
                target = self._word_ids(example.label)
            features.append(ClassificationFeature(ids, segments, label, target))
        return features

    def _word_ids(self, label: str) -> list[int]:
        """The decoder's target for `label`: its word, framed (T5: word </s>)."""
        return self.framing.single(self.tokenizer.encode(self.words.get(label, label)))

    def _encode(self, texts: tuple[str, ...]) -> tuple[list[int], list[int]]:
        """Token ids and segment ids (0 for the first text, 1 for the second) of one input."""
        if self.is_generative:  # text to text: one input, each text after its field's name
            joined = " ".join(
                f"{field}: {text}" if len(texts) > 1 else text
                for field, text in zip(self.text_fields, texts, strict=False)
            )
            texts = (self.options.prefix + joined,)
        pieces = [self.tokenizer.encode(text) for text in texts]
        return self.framing.join(pieces, self.max_length)

    def collate(self, features: Sequence[ClassificationFeature]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        input_ids = pad_batch([f.input_ids for f in features], pad)
        batch = {
            "input_ids": input_ids,
            "attention_mask": pad_batch([[1] * len(f.input_ids) for f in features], 0),
            "segment_ids": pad_batch([f.segment_ids for f in features], 0),
            "labels": torch.tensor([f.label for f in features]),
        }
        if self.is_generative and features and features[0].target_ids:
            targets = pad_batch([f.target_ids for f in features], IGNORE_INDEX)
            batch["target_ids"] = targets
            batch["decoder_input_ids"] = shift_right(targets, self.decoder_start_id, pad)
        return batch

    # --- model --------------------------------------------------------------------------------

    def build_model(self, backbone: LanguageModel) -> nn.Module:
        if self.is_generative:
            return backbone
        dropout = max(self.model_config.dropout, 0.1)  # BERT's classifier dropout
        return SequenceClassifier(backbone, len(self.labels), dropout)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.is_generative:
            return model(
                batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"],
                labels=batch["target_ids"],
            ).loss
        scores = model(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
        return F.cross_entropy(scores, batch["labels"])

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, examples: list[ClassificationExample], batch_size: int
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        rows, probabilities = self._classify(model, examples, batch_size)
        predicted = [row["prediction"] for row in rows]
        gold = [e.label for e in examples]
        for row, label in zip(rows, gold, strict=True):
            row["label"] = label
        metrics = {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold)}
        if probabilities:  # the cross-entropy the head is trained on, for the loss curve
            index = {label: i for i, label in enumerate(self.labels)}
            gold_ids = torch.tensor([index[label] for label in gold])
            picked = torch.cat(probabilities).gather(1, gold_ids[:, None])
            metrics["loss"] = float(-picked.clamp(min=1e-12).log().mean())
        return metrics, rows

    @torch.no_grad()
    def predict(
        self, model: nn.Module, examples: list[ClassificationExample], batch_size: int
    ) -> list[dict[str, Any]]:
        return self._classify(model, examples, batch_size)[0]

    def _classify(
        self, model: nn.Module, examples: list[ClassificationExample], batch_size: int
    ) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
        """Prediction rows, and the (B, C) label probabilities per batch (none when the label
        word is generated)."""
        features = self.features([ClassificationExample(e.texts, None) for e in examples])
        rows, probabilities = [], []
        for start in range(0, len(features), batch_size):
            batch = to_model_device(self.collate(features[start : start + batch_size]), model)
            if self.is_generative:
                rows += [{"prediction": p} for p in self._generate_labels(model, batch)]
                continue
            scores = model(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
            probs = scores.float().softmax(dim=-1).cpu()
            probabilities.append(probs)
            for row in probs.tolist():
                best = max(range(len(row)), key=row.__getitem__)
                rows.append({"prediction": self.labels[best], "probability": round(row[best], 4)})
        texts = [e.texts[0] if len(e.texts) == 1 else list(e.texts) for e in examples]
        return [{"text": text, **row} for text, row in zip(texts, rows, strict=True)], probabilities

    def _generate_labels(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
        """Greedy-decode the label word; an output that is no label's word counts as itself."""
        longest = max(len(self._word_ids(label)) for label in self.labels)
        out = generate_seq2seq(
            model,
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            sampling=SamplingConfig(max_new_tokens=longest, temperature=0.0),
            decoder_start_id=self.decoder_start_id,
            eos_id=self.tokenizer.eos_id,
        )
        by_word = {self.words.get(label, label): label for label in self.labels}
        texts = [self.tokenizer.decode(row[1:], skip_special_tokens=True).strip() for row in out]
        return [by_word.get(text, text) for text in texts]


def _parse_label_words(spec: str) -> dict[str, str]:
    words = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        label, eq, word = item.partition("=")
        if not eq or not label.strip() or not word.strip():
            raise LmforgeError(
                f"task.label_words: {item!r} is not LABEL=WORD; e.g. 0=negative,1=positive"
            )
        words[label.strip()] = word.strip()
    return words


_KINDS = {0: ("an integer", "integers"), 1: ("a decimal number", "decimal numbers"),
          2: ("a word", "words")}  # fmt: skip
"""Label kinds (`_label_kind`): (one, several)."""


def _label_kind(label: str) -> int:
    """0 for integers (`1`, `-1`), 1 for other numbers (`1.5`), 2 for anything else (`inf` too)."""
    try:
        value = float(label)
    except ValueError:
        return 2
    if not math.isfinite(value):
        return 2
    return 0 if value.is_integer() and "." not in label else 1


def _check_label_kinds(train: list[ClassificationExample]) -> None:
    """Refuse a training file whose labels mix kinds (integers with a word or a decimal, as
    `positive` or `1.5` in a 0/1 file): almost always a stray value that would silently become a
    class of its own. The first label of the rarer kind is named; `task.labels` accepts a mixed
    set on purpose."""
    kinds: dict[int, list[ClassificationExample]] = {}
    for example in train:  # in file order: each kind's first example comes first
        if example.label is not None:
            kinds.setdefault(_label_kind(example.label), []).append(example)
    if len(kinds) < 2:
        return
    common = max(kinds, key=lambda kind: len(kinds[kind]))
    stray = next(e for e in train if e.label is not None and _label_kind(e.label) != common)
    others = sorted({e.label for e in kinds[common]}, key=_natural_key)
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    raise LmforgeError(
        f"{stray.location or 'the training file'}: label {stray.label!r} is "
        f"{_KINDS[_label_kind(stray.label)][0]}, but the other labels are "
        f"{_KINDS[common][1]} ({shown}); fix it, or if it is a real class, "
        "list every label with --task.labels=..."
    )


def _natural_key(label: str) -> tuple[int, float | str]:
    """Numeric labels in numeric order (2 before 10), then the others alphabetically."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)
