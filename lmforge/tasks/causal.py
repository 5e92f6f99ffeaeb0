"""Causal fine-tuning: a decoder learns to continue a prompt with its response.

Each example is one sequence, the language-modeling loss taken on the response only (as in
instruction tuning, Ouyang et al. 2022; prompt tokens are context, not targets):

    tokens   <sep>  p1  p2  p3  r1  r2  <eos>
    labels    -100 -100 -100  r1  r2 <eos> -100      (aligned: the target of position t is
                                                      token t + 1; the model does not shift)

The sequence starts with the separator token, the token every document follows in the packed
pretraining data (lmforge.data.prepare), so the first prompt token is read as a document start was
during pretraining; `<s>` of our byte-level BPE tokenizers never occurs in pretraining data. For
GPT-2's own tokenizer both are `<|endoftext|>`. Too long a sequence loses the start of its prompt:
the response is what is learnt. Evaluation reports the teacher-forced loss, perplexity and accuracy
on response tokens, and greedy generations compared with the references (SQuAD-style normalised
exact match and token F1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmforge.config.finetune import CausalOptions
from lmforge.config.model import ModelConfig
from lmforge.data.prompts import PromptExample, read_prompts
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.evaluation.squad import exact_match_score, f1_score
from lmforge.models.heads import IGNORE_INDEX
from lmforge.models.lm import LanguageModel
from lmforge.tasks.base import Task, pad_batch, to_model_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CausalFeature:
    input_ids: list[int]
    """[separator] + prompt + response + [eos], at most max_length tokens."""
    labels: list[int]
    """Next-token targets aligned with input_ids; IGNORE_INDEX outside the response."""


class CausalTask(Task):
    name = "causal"
    families = ("decoder",)
    metric = "token_accuracy"

    def __init__(
        self, options: CausalOptions, tokenizer: Tokenizer, model_config: ModelConfig
    ) -> None:
        super().__init__(options, tokenizer, model_config)
        self.start_id = tokenizer.separator_id
        self.end_id = tokenizer.eos_id if tokenizer.eos_id is not None else self.start_id
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else self.end_id
        limit = model_config.max_seq_len
        # Windows longer than the model's positions cannot be read: fit them silently.
        self.max_length = min(options.max_length, limit) if limit else options.max_length
        room = limit - options.max_new_tokens if limit else self.max_length
        if room < 2:
            raise LmforgeError(
                f"task.max_new_tokens ({options.max_new_tokens}) leaves no room for a prompt in "
                f"the model's {limit} positions; lower it below {limit - 1}"
            )
        # Generation reads prompts as training did (at most max_length - 1 tokens with the
        # separator) and must leave max_new_tokens positions free.
        self.prompt_budget = min(self.max_length - 1, room)

    # --- data ---------------------------------------------------------------------------------

    def read(self, path: str) -> list[PromptExample]:
        return read_prompts(
            path,
            prompt_field=self.options.prompt_field,
            response_field=self.options.response_field,
        )

    def read_inputs(self, path: str) -> list[PromptExample]:
        return read_prompts(
            path,
            prompt_field=self.options.prompt_field,
            response_field=self.options.response_field,
            require_response=False,
        )

    def inputs_from_texts(self, texts: list[str]) -> list[PromptExample]:
        return [PromptExample(text, None) for text in texts]

    def features(self, examples: list[PromptExample]) -> list[CausalFeature]:
        prompts = self.tokenizer.encode_batch([e.prompt for e in examples])
        responses = self.tokenizer.encode_batch([e.response or "" for e in examples])
        features = [self._feature(p, r) for p, r in zip(prompts, responses, strict=True)]
        cut = sum(
            len(f.input_ids) < len(p) + len(r) + 2
            for f, p, r in zip(features, prompts, responses, strict=True)
        )
        if cut:
            logger.info(
                "%d of %d examples exceed task.max_length=%d tokens: their prompts lose their "
                "start", cut, len(examples), self.max_length,
            )  # fmt: skip
        return features

    def _feature(self, prompt: list[int], response: list[int]) -> CausalFeature:
        """Truncate to max_length, the prompt from the left, then (a response longer than the whole
        window) the response from the right, losing its eos."""
        targets = (response + [self.end_id])[: self.max_length - 1]
        keep = self.max_length - 1 - len(targets)
        context = prompt[len(prompt) - keep :] if keep else []
        input_ids = [self.start_id, *context, *targets]
        # Position t predicts token t + 1: the separator and the prompt except its last token
        # predict prompt tokens (no target); the last prompt token predicts r1, ...; eos nothing.
        labels = [IGNORE_INDEX] * len(context) + targets + [IGNORE_INDEX]
        return CausalFeature(input_ids, labels)

    def collate(self, features: Sequence[CausalFeature]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, labels: (B, T), right-padded (positions stay 0, 1, ...)."""
        input_ids = pad_batch([f.input_ids for f in features], self.pad_id)
        attention_mask = pad_batch([[1] * len(f.input_ids) for f in features], 0)
        labels = pad_batch([f.labels for f in features], IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    # --- model --------------------------------------------------------------------------------

    def build_model(self, backbone: LanguageModel) -> nn.Module:
        return backbone  # the language-modeling head is the task's head

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = model(
            batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        return output.loss

    # --- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, examples: list[PromptExample], batch_size: int
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        was_training = model.training
        model.eval()
        metrics = self._teacher_forced(model, examples, batch_size)
        predictions = self.generate(model, [e.prompt for e in examples], batch_size)
        model.train(was_training)
        references = [e.response or "" for e in examples]
        metrics["exact_match"] = _mean(map(exact_match_score, predictions, references))
        metrics["f1"] = _mean(map(f1_score, predictions, references))
        rows = [
            {"prompt": e.prompt, "response": e.response, "prediction": p}
            for e, p in zip(examples, predictions, strict=True)
        ]
        return metrics, rows

    @torch.no_grad()
    def predict(
        self, model: nn.Module, examples: list[PromptExample], batch_size: int
    ) -> list[dict[str, Any]]:
        was_training = model.training
        model.eval()
        predictions = self.generate(model, [e.prompt for e in examples], batch_size)
        model.train(was_training)
        rows = []
        for example, prediction in zip(examples, predictions, strict=True):
            row = {"prompt": example.prompt, "prediction": prediction}
            if example.response is not None:
                row["response"] = example.response
            rows.append(row)
        return rows

    def _teacher_forced(
        self, model: nn.Module, examples: list[PromptExample], batch_size: int
    ) -> dict[str, float]:
        """Loss (nats per response token), perplexity and token accuracy (points) on responses."""
        features = self.features(examples)
        loss_sum, num_targets, num_correct = 0.0, 0, 0
        for start in range(0, len(features), batch_size):
            batch = to_model_device(self.collate(features[start : start + batch_size]), model)
            output = model(
                batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            )
            loss_sum += float(output.loss_sum)
            num_targets += int(output.num_targets)
            num_correct += int(output.num_correct)
        loss = loss_sum / max(num_targets, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),  # capped: a diverged model gives inf
            "token_accuracy": 100.0 * num_correct / max(num_targets, 1),
        }

    def generate(self, model: nn.Module, prompts: list[str], batch_size: int) -> list[str]:
        """Greedy continuations of `prompts` up to eos or task.max_new_tokens, decoded."""
        from lmforge.generation.search import SamplingConfig, cut_at_eos, generate, left_pad

        sampling = SamplingConfig(max_new_tokens=self.options.max_new_tokens, temperature=0.0)
        encoded = [
            [self.start_id, *ids[max(0, len(ids) - self.prompt_budget + 1) :]]
            for ids in self.tokenizer.encode_batch(prompts)
        ]
        # Batches of similar lengths waste less compute on left padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs = [""] * len(encoded)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = left_pad([encoded[i] for i in rows], self.pad_id)
            output = generate(
                model, input_ids, attention_mask=attention_mask, sampling=sampling,
                eos_id=self.end_id,
            )  # fmt: skip
            for row, tokens in zip(rows, output[:, input_ids.shape[1] :].tolist(), strict=True):
                tokens = cut_at_eos(tokens, self.end_id)
                outputs[row] = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return outputs


def _mean(values: Any) -> float:
    """The mean of per-example scores in [0, 1], in points (0-100)."""
    values = list(values)
    return 100.0 * sum(values) / max(len(values), 1)
