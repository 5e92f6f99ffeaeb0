"""Extractive question answering (SQuAD v1.1): predict the answer's start and end token.

As in BERT (Devlin et al. 2019, section 4.2) and Hugging Face's run_qa.py, each question is paired
with its context in windows of at most `max_length` tokens:

    WordPiece (BERT):       [CLS] question [SEP] context-window [SEP]      segments 0... 1...
    byte-level BPE (RoBERTa): <s> question </s></s> context-window </s>

A context longer than one window is cut into several, consecutive ones sharing `stride` tokens.
A linear head gives each position a start and an end score. Training targets the answer's first
and last token in the window, or position 0 ([CLS]) when the answer is not wholly inside it.
Decoding takes, over all windows of a question, the `n_best` start and end candidates among the
context tokens, keeps spans with end >= start no longer than `max_answer_length` tokens, and
returns the best-scoring one (start + end score) as the original context characters, found through
the tokenizer's character offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.finetune import QAOptions
from lmforge.config.model import ModelConfig
from lmforge.data.squad import QAExample, read_squad, split_by_article
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.evaluation.squad import squad_scores
from lmforge.models.heads import TaskHead
from lmforge.models.lm import LanguageModel
from lmforge.tasks.base import Task, pad_batch, to_model_device

Span = tuple[int, int]
"""Character offsets [start, end) in a context."""


@dataclass(frozen=True)
class QAWindow:
    """One model input: a question and a slice of its context."""

    example_index: int
    """Index of the question in the list the windows were made from."""
    input_ids: list[int]
    segment_ids: list[int] | None
    """0 over the question part, 1 over the context part (models with 2 segment types only)."""
    context_start: int
    """Position of the window's first context token."""
    offsets: list[Span]
    """Characters of each context token of the window, whitespace trimmed; (s, s) for a token of
    whitespace only (byte-level BPE's lone "Ġ"), which can neither start nor end an answer."""
    start_position: int
    end_position: int
    """Positions of the answer's first and last token; 0 (the first token) when the window does not
    hold the whole answer or the question has none."""


class SpanExtractor(nn.Module):
    """Backbone + a linear head scoring every position as answer start and end:
    (B, T) ids -> (B, T, 2) scores, padding positions at the lowest finite value."""

    def __init__(self, backbone: LanguageModel) -> None:
        super().__init__()
        self.backbone = backbone
        # No dropout before the span scores, as BertForQuestionAnswering's qa_outputs.
        self.head = TaskHead(backbone.config.d_model, 2, dropout=None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.backbone.hidden_states(
            input_ids, attention_mask=attention_mask, segment_ids=segment_ids
        )
        scores = self.head(hidden)  # (B, T, 2)
        # Padding never wins and does not shift the softmax, so results do not depend on batching.
        padding = (attention_mask == 0).unsqueeze(-1)
        return scores.masked_fill(padding, torch.finfo(scores.dtype).min)


class ExtractiveQATask(Task):
    name = "qa"
    families = ("encoder",)
    metric = "f1"

    def __init__(self, options: QAOptions, tokenizer: Tokenizer, model_config: ModelConfig):
        super().__init__(options, tokenizer, model_config)
        self.framing.require_enclosing("extractive QA")
        self.max_length = min(options.max_length, model_config.max_seq_len or options.max_length)
        specials = self.framing.special_count(2)
        if options.stride >= self.max_length - options.max_question_length - specials:
            raise LmforgeError(
                f"task.stride={options.stride} leaves no room in {self.max_length}-token windows "
                f"(the model's limit) after a {options.max_question_length}-token question; "
                "lower task.stride or task.max_question_length"
            )

    # --- data ---------------------------------------------------------------------------------

    def read(self, path: str) -> list[QAExample]:
        examples = self.read_inputs(path)
        unanswered = next((e for e in examples if not e.answers), None)
        if unanswered is not None:
            raise LmforgeError(
                f"{path}: question {unanswered.id} has no answers; training and evaluation files "
                "need them (only inputs to `lmforge predict` may leave them out)"
            )
        return examples

    def read_inputs(self, path: str) -> list[QAExample]:
        examples = read_squad(path)
        if not examples:
            raise LmforgeError(f"{path} holds no questions")
        return examples

    def split_validation(
        self, examples: list[QAExample], fraction: float
    ) -> tuple[list[QAExample], list[QAExample]]:
        # Whole articles: questions about one paragraph on both sides would overstate the score.
        return split_by_article(examples, fraction)

    def features(self, examples: list[QAExample]) -> list[QAWindow]:
        """All windows of all questions; labels from each question's first answer."""
        contexts = list(dict.fromkeys(e.context for e in examples))
        encoded = self.tokenizer.inner.encode_batch(contexts, add_special_tokens=False)
        tokens = {
            text: (e.ids, _trim_offsets(e.offsets, text))
            for text, e in zip(contexts, encoded, strict=True)
        }
        # Leading spaces would only cost tokens (run_qa.py strips them too).
        questions = self.tokenizer.encode_batch([e.question.lstrip() for e in examples])
        windows = []
        for index, (example, question) in enumerate(zip(examples, questions, strict=True)):
            ids, offsets = tokens[example.context]
            question = question[: self.options.max_question_length]
            windows += self._windows(index, example, question, ids, offsets)
        return windows

    def _windows(
        self,
        index: int,
        example: QAExample,
        question: list[int],
        ids: list[int],
        offsets: list[Span],
    ) -> list[QAWindow]:
        """The windows of one question over its context tokens `ids` (with their `offsets`)."""
        framing = self.framing
        context_start = len(framing.start) + len(question) + len(framing.middle)
        room = self.max_length - framing.special_count(2) - len(question)
        answer = _answer_tokens(example, offsets)
        windows, start = [], 0
        while True:
            end = min(start + room, len(ids))
            first, last = 0, 0
            if answer is not None and start <= answer[0] and answer[1] < end:
                first, last = answer[0] - start + context_start, answer[1] - start + context_start
            input_ids, segment_ids = framing.pair(question, ids[start:end])
            window = QAWindow(
                index, input_ids, segment_ids if framing.has_segments else None, context_start,
                offsets[start:end], first, last,
            )  # fmt: skip
            windows.append(window)
            if end == len(ids):
                return windows
            start += room - self.options.stride

    def collate(self, features: Sequence[QAWindow]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, (segment_ids,): (B, T); start/end_positions: (B,)."""
        pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        batch = {
            "input_ids": pad_batch([f.input_ids for f in features], pad_id),
            "attention_mask": pad_batch([[1] * len(f.input_ids) for f in features], 0),
            "start_positions": torch.tensor([f.start_position for f in features]),
            "end_positions": torch.tensor([f.end_position for f in features]),
        }
        if self.framing.has_segments:
            batch["segment_ids"] = pad_batch([f.segment_ids or [] for f in features], 0)
        return batch

    # --- model --------------------------------------------------------------------------------

    def build_model(self, backbone: LanguageModel) -> nn.Module:
        return SpanExtractor(backbone)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(CE(start) + CE(end)) / 2, as BertForQuestionAnswering."""
        scores = model(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
        start_loss = F.cross_entropy(scores[..., 0].float(), batch["start_positions"])
        end_loss = F.cross_entropy(scores[..., 1].float(), batch["end_positions"])
        return (start_loss + end_loss) / 2

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, examples: list[QAExample], batch_size: int
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """SQuAD exact_match and f1 (0-100) against all reference answers of each question."""
        rows = self.predict(model, examples, batch_size)
        for row, example in zip(rows, examples, strict=True):
            row["answers"] = example.answers
        predictions = {row["id"]: row["prediction"] for row in rows}
        metrics = squad_scores(predictions, {e.id: e.answers for e in examples})
        return metrics, rows

    @torch.no_grad()
    def predict(
        self, model: nn.Module, examples: list[QAExample], batch_size: int
    ) -> list[dict[str, Any]]:
        windows = self.features(examples)
        scores = _window_scores(model, self.collate, windows, batch_size)
        by_example: list[list[tuple[QAWindow, torch.Tensor]]] = [[] for _ in examples]
        for window, window_scores in zip(windows, scores, strict=True):
            by_example[window.example_index].append((window, window_scores))
        return [
            {
                "id": example.id,
                "question": example.question,
                "prediction": decode_answer(
                    example.context,
                    by_example[i],
                    self.options.n_best,
                    self.options.max_answer_length,
                ),
            }
            for i, example in enumerate(examples)
        ]


def _trim_offsets(offsets: Sequence[Span], text: str) -> list[Span]:
    """Token offsets without surrounding whitespace (byte-level BPE counts the space before a word
    as part of its token; the answer must not start with it)."""
    trimmed = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        trimmed.append((start, end))
    return trimmed


def _answer_tokens(example: QAExample, offsets: list[Span]) -> tuple[int, int] | None:
    """Indices of the first and last context token overlapping the first answer, or None."""
    if not example.answers or not example.answers[0]:
        return None
    start = example.answer_starts[0]
    end = start + len(example.answers[0])
    covering = [i for i, (s, e) in enumerate(offsets) if s < e and s < end and e > start]
    return (covering[0], covering[-1]) if covering else None


def _window_scores(
    model: nn.Module, collate: Any, windows: list[QAWindow], batch_size: int
) -> list[torch.Tensor]:
    """Start/end scores (T_w, 2) of each window, float32 on the CPU, padding cut off."""
    scores: list[torch.Tensor] = []
    for begin in range(0, len(windows), batch_size):
        chunk = windows[begin : begin + batch_size]
        batch = to_model_device(collate(chunk), model)
        out = model(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
        out = out.float().cpu()
        scores += [out[i, : len(w.input_ids)] for i, w in enumerate(chunk)]
    return scores


def decode_answer(
    context: str,
    windows: Sequence[tuple[QAWindow, torch.Tensor]],
    n_best: int,
    max_answer_length: int,
) -> str:
    """The best span over all windows of one question as the exact characters of `context`;
    "" when no window has a context token. Each window comes with its scores (T_w, 2)."""
    best_score, best_span = float("-inf"), (0, 0)
    for window, scores in windows:
        tokens = torch.tensor([i for i, (s, e) in enumerate(window.offsets) if s < e])
        if len(tokens) == 0:
            continue
        k = min(n_best, len(tokens))
        context_scores = scores[window.context_start + tokens]  # (N, 2): context tokens only
        start_scores, start_pick = context_scores[:, 0].topk(k)
        end_scores, end_pick = context_scores[:, 1].topk(k)
        starts, ends = tokens[start_pick], tokens[end_pick]  # (k,) context token indices
        length = ends[None, :] - starts[:, None] + 1  # (k, k): row = start, column = end
        total = start_scores[:, None] + end_scores[None, :]
        total = total.masked_fill((length < 1) | (length > max_answer_length), float("-inf"))
        flat = int(total.argmax())
        if total.flatten()[flat] > best_score:
            best_score = float(total.flatten()[flat])
            first, last = int(starts[flat // k]), int(ends[flat % k])
            best_span = (window.offsets[first][0], window.offsets[last][1])
    return context[best_span[0] : best_span[1]]
