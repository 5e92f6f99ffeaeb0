"""Sequence-to-sequence fine-tuning of encoder-decoder models: translation, summarization and
generative QA (`lmforge finetune seq2seq`).

The model is the pretrained encoder-decoder itself, trained with teacher forcing on the first
reference and evaluated on text it generates (beam search, or greedy with num_beams=1):
translation by corpus BLEU, summarization by ROUGE-1/2/L, QA by SQuAD exact match and F1.

Framing follows each family's pretraining (see `objectives/`):

    T5 (unigram, no <s>)   input   prefix + source </s>       decoder  <pad> target
                           labels  target </s>
    BART (BPE with <s>)    input   <s> prefix + source </s>   decoder  </s> <s> target
                           labels  <s> target </s>

The decoder start token (<pad> for T5, </s> for BART) is the one the model configuration stores
(`tokens.decoder_start_id`); it is also saved by `state()`, so prediction starts where training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmforge.config.finetune import Seq2SeqOptions
from lmforge.config.model import ModelConfig
from lmforge.data.framing import shift_right
from lmforge.data.pairs import Seq2SeqExample, read_pairs
from lmforge.data.records import split_by_group
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.generation.search import (
    BeamConfig,
    SamplingConfig,
    beam_search_seq2seq,
    cut_at_eos,
    decoder_start_id,
    generate_seq2seq,
)
from lmforge.models.heads import IGNORE_INDEX
from lmforge.models.lm import EncoderDecoderModel, LanguageModel
from lmforge.tasks.base import Task, pad_batch, to_model_device

METRICS = {"translation": "bleu", "summarization": "rougeL", "qa": "f1"}
"""The metric that picks the best checkpoint, per `task.kind`."""


@dataclass
class Seq2SeqFeature:
    input_ids: list[int]
    """Framed source tokens, at most max_source_length."""
    labels: list[int]
    """Framed first-reference tokens, at most max_target_length."""


class Seq2SeqTask(Task):
    name = "seq2seq"
    families = ("encoder_decoder",)
    metric = "bleu"  # the instance's, set from options.kind, overrides this

    def __init__(
        self, options: Seq2SeqOptions, tokenizer: Tokenizer, model_config: ModelConfig
    ) -> None:
        super().__init__(options, tokenizer, model_config)
        self.metric = METRICS[options.kind]
        if tokenizer.eos_id is None:
            raise LmforgeError("seq2seq fine-tuning needs a tokenizer with an end token (</s>)")
        special = self.framing.special_count()  # </s>, and <s> with BART-style tokenizers
        if options.max_source_length <= special or options.max_target_length <= special:
            raise LmforgeError(
                f"task.max_source_length and task.max_target_length must exceed {special} "
                "(the special tokens around each text)"
            )
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        self.decoder_start_id = decoder_start_id(model_config)

    # --- data ---------------------------------------------------------------------------------

    def _read(self, path: str, require_targets: bool) -> list[Seq2SeqExample]:
        options = self.options
        return read_pairs(
            path,
            source_field=options.source_field,
            target_field=options.target_field,
            source_lang=options.source_lang,
            target_lang=options.target_lang,
            require_targets=require_targets,
            squad=options.kind == "qa",
        )

    def read(self, path: str) -> list[Seq2SeqExample]:
        examples = self._read(path, require_targets=True)
        unanswered = [e for e in examples if not e.references]
        if unanswered:  # only SQuAD files can leave the answers out
            raise LmforgeError(
                f"{path}: {len(unanswered)} example(s) have no reference target, e.g. "
                f"{unanswered[0].id or unanswered[0].source[:40]!r}"
            )
        return examples

    def read_inputs(self, path: str) -> list[Seq2SeqExample]:
        return self._read(path, require_targets=False)

    def inputs_from_texts(self, texts: list[str]) -> list[Seq2SeqExample]:
        return [Seq2SeqExample(text, []) for text in texts]

    def split_validation(
        self, examples: list[Seq2SeqExample], fraction: float
    ) -> tuple[list[Seq2SeqExample], list[Seq2SeqExample]]:
        """The last `fraction` of the examples; for SQuAD the last `fraction` of the articles,
        whole, so that no paragraph is seen in both (as `finetune qa` splits them)."""
        if not examples or examples[0].group is None:
            return super().split_validation(examples, fraction)
        return split_by_group(examples, fraction, [e.group for e in examples], "article")

    def state(self) -> dict[str, Any]:
        return {"decoder_start_id": self.decoder_start_id}

    def load_state(self, state: dict[str, Any]) -> None:
        self.decoder_start_id = int(state.get("decoder_start_id", self.decoder_start_id))

    def encode_source(self, source: str) -> list[int]:
        """[<s>] prefix + source </s>, truncated to max_source_length tokens."""
        tokens = self.tokenizer.encode(self.options.prefix + source)
        return self.framing.single(tokens, self.options.max_source_length)

    def encode_target(self, target: str) -> list[int]:
        """[<s>] target </s>, truncated to max_target_length tokens."""
        return self.framing.single(self.tokenizer.encode(target), self.options.max_target_length)

    def features(self, examples: list[Seq2SeqExample]) -> list[Seq2SeqFeature]:
        return [
            Seq2SeqFeature(self.encode_source(e.source), self.encode_target(e.references[0]))
            for e in examples
        ]

    def _encoder_inputs(self, rows: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        """input_ids (B, S) right-padded, attention_mask (B, S) with 1 on real tokens."""
        lengths = torch.tensor([len(row) for row in rows])
        input_ids = pad_batch(rows, self.pad_id)
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def collate(self, features: Sequence[Seq2SeqFeature]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask: (B, S); decoder_input_ids, labels: (B, T), the labels -100
        on padding and the decoder inputs the labels shifted right behind the start token."""
        batch = self._encoder_inputs([f.input_ids for f in features])
        labels = pad_batch([f.labels for f in features], IGNORE_INDEX)
        batch["decoder_input_ids"] = shift_right(labels, self.decoder_start_id, self.pad_id)
        batch["labels"] = labels
        return batch

    # --- model --------------------------------------------------------------------------------

    def build_model(self, backbone: LanguageModel) -> nn.Module:
        assert isinstance(backbone, EncoderDecoderModel)
        return backbone

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
            labels=batch["labels"],
        ).loss

    # --- generation and metrics ---------------------------------------------------------------

    def _generate_batch(self, model: EncoderDecoderModel, sources: list[list[int]]) -> list[str]:
        """Decoded texts generated for framed sources (beam search, greedy when num_beams=1)."""
        options, eos_id = self.options, self.tokenizer.eos_id
        inputs = self._encoder_inputs(sources)
        common = {"attention_mask": inputs["attention_mask"], "eos_id": eos_id}
        if options.num_beams > 1:
            beam = BeamConfig(
                num_beams=options.num_beams,
                max_new_tokens=options.max_target_length,
                length_penalty=options.length_penalty,
                no_repeat_ngram_size=options.no_repeat_ngram_size,
            )
            output = beam_search_seq2seq(
                model, inputs["input_ids"], beam=beam, decoder_start_id=self.decoder_start_id,
                pad_id=self.pad_id, **common,
            )  # fmt: skip
        else:
            greedy = SamplingConfig(max_new_tokens=options.max_target_length, temperature=0)
            output = generate_seq2seq(
                model, inputs["input_ids"], sampling=greedy,
                decoder_start_id=self.decoder_start_id, **common,
            )  # fmt: skip
        texts = []
        for row in output[:, 1:].tolist():  # column 0 is the decoder start token
            tokens = cut_at_eos(row, eos_id)
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())
        return texts

    def generate(
        self, model: nn.Module, examples: list[Seq2SeqExample], batch_size: int
    ) -> list[str]:
        """The generated text of every example, in example order. Batches group sources of
        similar length, so that little of the (batch x beams) work is padding."""
        sources = [self.encode_source(e.source) for e in examples]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]), reverse=True)
        texts: list[str] = [""] * len(sources)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            generated = self._generate_batch(model, [sources[i] for i in chunk])
            for i, text in zip(chunk, generated, strict=True):
                texts[i] = text
        return texts

    def _scores(self, predictions: list[str], examples: list[Seq2SeqExample]) -> dict[str, float]:
        references = [e.references for e in examples]
        if self.options.kind == "translation":
            from lmforge.evaluation.generation import bleu

            return {"bleu": bleu(predictions, references)}
        if self.options.kind == "summarization":
            from lmforge.evaluation.generation import rouge

            return rouge(predictions, references)
        from lmforge.evaluation.squad import squad_scores

        ids = [e.id if e.id is not None else str(i) for i, e in enumerate(examples)]
        return squad_scores(
            dict(zip(ids, predictions, strict=True)), dict(zip(ids, references, strict=True))
        )

    def _loss(self, model: nn.Module, examples: list[Seq2SeqExample], batch_size: int) -> float:
        """Teacher-forced cross-entropy per target token (nats) over all examples."""
        loss_sum, num_targets = 0.0, 0
        features = self.features(examples)
        for start in range(0, len(features), batch_size):
            batch = to_model_device(self.collate(features[start : start + batch_size]), model)
            output = model(
                batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"],
                labels=batch["labels"],
            )
            loss_sum += float(output.loss_sum)
            num_targets += int(output.num_targets)
        return loss_sum / max(num_targets, 1)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, examples: list[Seq2SeqExample], batch_size: int
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Metrics of the generated texts (per kind, see METRICS) and `loss`, the teacher-forced
        loss per target token; one row per example: source, prediction, references."""
        missing = sum(1 for e in examples if not e.references)
        if missing:
            raise LmforgeError(f"{missing} evaluation example(s) have no reference target")
        was_training = model.training
        model.eval()
        predictions = self.generate(model, examples, batch_size)
        metrics = self._scores(predictions, examples)
        metrics["loss"] = self._loss(model, examples, batch_size)
        model.train(was_training)
        rows = [_row(e, p) for e, p in zip(examples, predictions, strict=True)]
        return metrics, rows

    @torch.no_grad()
    def predict(
        self, model: nn.Module, examples: list[Seq2SeqExample], batch_size: int
    ) -> list[dict[str, Any]]:
        predictions = self.generate(model, examples, batch_size)
        return [_row(e, p) for e, p in zip(examples, predictions, strict=True)]


def _row(example: Seq2SeqExample, prediction: str) -> dict[str, Any]:
    row: dict[str, Any] = {} if example.id is None else {"id": example.id}
    row.update(source=example.source, prediction=prediction)
    if example.references:
        row["references"] = example.references
    return row
