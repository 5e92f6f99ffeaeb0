"""The transformers side of bench/finetune_parity.py, and lmforge's step-0 state it starts from.

`step_zero` rebuilds, in this process, what `lmforge finetune` holds before its first step, with
the calls training/finetune.py:finetune makes in its order (same seed, so the same task head
weights): the task object (tokenization, collation, decoding, metrics), the model and the training
features. `transformers_side` loads the `convert --to-hf` export into the matching transformers
class, gives it lmforge's initial head, and trains it with a plain PyTorch loop on lmforge's
batches in lmforge's order (`batch_order`, `lr_factor` mirror training/finetune.py), scored through
lmforge's task code; seq2seq text comes from transformers' own `generate`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# lmforge internals this side shares.
from lmforge.config.finetune import load_finetune_config
from lmforge.evaluation.classification import accuracy, macro_f1
from lmforge.evaluation.generation import bleu, rouge
from lmforge.generation.search import cut_at_eos
from lmforge.tasks.base import pad_batch, task_class
from lmforge.training.finetune import load_backbone
from lmforge.training.optim import build_optimizer


@dataclasses.dataclass
class StepZero:
    """lmforge's fine-tuning state before its first step, rebuilt with the calls of
    training/finetune.py:finetune in its order, so that the seed gives the same head weights."""

    config: Any
    task: Any
    model: nn.Module
    features: list
    validation: list
    rng_state: torch.Tensor
    """The global torch RNG state the CLI run's first forward pass (its dropout) starts from."""


def step_zero(task_name: str, run: Path, options: list[str]) -> StepZero:
    """The state `lmforge finetune TASK_NAME RUN OPTIONS` starts its first step from."""
    config = load_finetune_config(task_name, str(run), [*options, "--run.dir=-"])
    torch.manual_seed(config.run.seed)
    backbone, tokenizer, _ = load_backbone(
        config.pretrained, config.train.init, config.train.dropout
    )
    task = task_class(task_name)(config.task, tokenizer, backbone.config)
    train, validation = read_splits(task, config.data)
    task.fit_labels(train)
    model = task.build_model(backbone)
    return StepZero(config, task, model, task.features(train), validation, torch.get_rng_state())


def read_splits(task: Any, data: Any) -> tuple[list, list]:
    """Training and validation examples as training/finetune.py:_read_splits selects them."""
    train = task.read(data.train)
    if data.validation:
        validation = task.read(data.validation)
    else:
        train, validation = task.split_validation(train, data.validation_split)
    if data.max_train_examples:
        train = train[: data.max_train_examples]
    if data.max_eval_examples:
        validation = validation[: data.max_eval_examples]
    return train, validation


def batch_order(num_features: int, batch_size: int, seed: int, steps: int) -> list[list[int]]:
    """Feature indices of every step as training/finetune.py:_Loop._next_indices draws them: a
    random.Random(seed) permutation per epoch, popped from its end."""
    rng, order, batches = random.Random(seed), [], []
    for _ in range(steps):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(num_features))
                rng.shuffle(order)
            batch.append(order.pop())
        batches.append(batch)
    return batches


def lr_factor(step: int, warmup: int, total: int) -> float:
    """BERT's fine-tuning schedule, written out (lmforge's is training/schedules.py:lr_at with a
    linear decay): linear warmup, then linear decay to 0 (0-based steps)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# --- transformers' side -----------------------------------------------------------------------

AUTO_CLASSES = {"sequence": "AutoModelForSequenceClassification",
                "token": "AutoModelForTokenClassification",
                "span": "AutoModelForQuestionAnswering",
                "seq2seq": "AutoModelForSeq2SeqLM", "words": "AutoModelForSeq2SeqLM"}  # fmt: skip


class TransformersTaskModel(nn.Module):
    """A transformers task model behind the call signature of lmforge's task models, so that the
    task's own decoding and metrics score it: (B, T) ids -> (B, C) class scores, (B, T, C) tag
    scores or (B, T, 2) span scores; `loss(batch)` takes lmforge's collated batches."""

    def __init__(self, hf: nn.Module, kind: str, has_segments: bool) -> None:
        super().__init__()
        self.hf, self.kind, self.has_segments = hf, kind, has_segments

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        types = {"token_type_ids": segment_ids} if self.has_segments else {}
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, **types)
        if self.kind != "span":
            return out.logits
        scores = torch.stack([out.start_logits, out.end_logits], dim=-1)  # (B, T, 2)
        # lmforge's QA loss leaves padding out of the softmax; transformers' own counts it.
        return scores.masked_fill((attention_mask == 0)[..., None], torch.finfo(scores.dtype).min)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.kind in ("seq2seq", "words"):
            labels = batch["target_ids" if self.kind == "words" else "labels"]
            return self.hf(**inputs, decoder_input_ids=batch["decoder_input_ids"],
                           labels=labels).loss  # fmt: skip
        if self.kind == "span":
            scores = self(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
            start = F.cross_entropy(scores[..., 0], batch["start_positions"])
            return (start + F.cross_entropy(scores[..., 1], batch["end_positions"])) / 2
        if self.has_segments and "segment_ids" in batch:
            inputs["token_type_ids"] = batch["segment_ids"]
        return self.hf(**inputs, labels=batch["labels"]).loss


def load_transformers(kind: str, export: Path, zero: StepZero) -> TransformersTaskModel:
    """The exported folder in the transformers class of `kind`, with lmforge's dropout rates."""
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized" heads are expected here
    transformers.utils.logging.disable_progress_bar()
    config = transformers.AutoConfig.from_pretrained(str(export))
    cfg = zero.task.model_config
    head = getattr(getattr(zero.model, "head", None), "dropout", None)  # nn.Identity: none
    drop, attention, embedding = cfg.dropout, cfg.attention.dropout, cfg.embedding.dropout
    encoder = {"hidden_dropout_prob": drop, "attention_probs_dropout_prob": attention,
               "classifier_dropout": getattr(head, "p", drop)}  # fmt: skip
    rates = {"bert": encoder, "roberta": encoder,
             "gpt2": {"resid_pdrop": drop, "embd_pdrop": embedding, "attn_pdrop": attention},
             "bloom": {"hidden_dropout": drop, "attention_dropout": attention},
             "t5": {"dropout_rate": drop},
             "bart": {"dropout": drop, "attention_dropout": attention, "activation_dropout": 0.0},
             }[config.model_type]  # fmt: skip
    for field, value in rates.items():
        setattr(config, field, value)
    if kind in ("sequence", "token"):
        config.num_labels = len(zero.task.labels)
    auto = getattr(transformers, AUTO_CLASSES[kind])
    hf = auto.from_pretrained(str(export), config=config)
    return TransformersTaskModel(hf, kind, has_segments=config.model_type in ("bert", "roberta"))


@torch.no_grad()
def copy_head(ours: nn.Module, theirs: nn.Module, modules: dict[str, str]) -> None:
    """Give transformers' head lmforge's initial head weights; the heads have the same structure
    (models/heads.py, tasks/), so a bias on one side only is an error."""
    for source, target in modules.items():
        a, b = ours.get_submodule(source), theirs.get_submodule(target)
        if (a.bias is None) != (b.bias is None):
            raise AssertionError(f"lmforge's {source} and transformers' {target} differ in bias")
        b.weight.copy_(a.weight)
        if b.bias is not None:
            b.bias.copy_(a.bias)


def first_step(zero: StepZero, model: TransformersTaskModel, batch: dict) -> dict[str, Any]:
    """Loss and gradient norm of both sides on the first batch before any update, without dropout;
    and lmforge's step-1 loss replayed as the CLI run computed it (its RNG state, train mode)."""
    result: dict[str, Any] = {}
    sides = (("lmforge", zero.model, lambda: zero.task.loss(zero.model, batch)),
             ("transformers", model, lambda: model.loss(batch)))  # fmt: skip
    for side, module, compute in sides:
        module.eval()
        loss = compute()
        loss.backward()
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads))
        result[side] = {"loss": loss.item(), "grad_norm": norm}
        module.zero_grad(set_to_none=True)
    result["loss_difference"] = result["lmforge"]["loss"] - result["transformers"]["loss"]
    norms = result["lmforge"]["grad_norm"], result["transformers"]["grad_norm"]
    result["grad_norm_difference"] = (norms[0] - norms[1]) / max(norms[1], 1e-12)  # relative
    torch.set_rng_state(zero.rng_state)
    result["replayed_loss"] = zero.task.loss(zero.model.train(), batch).item()
    return result


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding encoder tokens, plus decoder targets of seq2seq batches."""
    tokens = int(batch["attention_mask"].sum())
    if "decoder_input_ids" in batch:
        tokens += int((batch.get("target_ids", batch["labels"]) != -100).sum())
    return tokens


def transformers_side(
    kind: str, export: Path, head: dict[str, str], zero: StepZero, seed: int
) -> dict[str, Any]:
    """Fine-tune the export with lmforge's batches, order, optimizer, schedule and steps; `head`
    maps lmforge's head modules to the transformers modules that get their initial weights."""
    model = load_transformers(kind, export, zero)
    copy_head(zero.model, model.hf, head)
    train, task = zero.config.train, zero.task
    steps_per_epoch = max(1, math.ceil(len(zero.features) / train.batch_size))
    max_steps = train.max_steps or math.ceil(train.epochs * steps_per_epoch)
    eval_every = zero.config.eval.every or steps_per_epoch
    warmup = int(train.warmup_ratio * max_steps)
    batches = batch_order(len(zero.features), train.batch_size, seed, max_steps)
    first = first_step(zero, model, task.collate([zero.features[i] for i in batches[0]]))
    optimizer = build_optimizer(
        model, lr=train.lr, weight_decay=train.weight_decay, betas=(train.beta1, train.beta2)
    )
    torch.manual_seed(seed)
    seconds, tokens, evaluations = 0.0, 0, []
    for step, indices in enumerate(batches, start=1):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = train.lr * lr_factor(step - 1, warmup, max_steps)
        batch = task.collate([zero.features[i] for i in indices])
        loss = model.train().loss(batch)
        loss.backward()
        if train.grad_clip:
            params = [p for p in model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, train.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - start
        tokens += batch_tokens(batch)
        if step % eval_every == 0 or step == max_steps:
            evaluations.append(evaluate(kind, model.eval(), zero))
    best = max(evaluations, key=lambda metrics: metrics[task.metric])
    return {"validation": best, "seconds": seconds, "tokens": tokens, "first_step": first}


def evaluate(kind: str, model: TransformersTaskModel, zero: StepZero) -> dict[str, float]:
    """Validation metrics of the transformers model by lmforge's task decoding and metrics."""
    task, examples, batch_size = zero.task, zero.validation, zero.config.eval.batch_size
    if kind in ("sequence", "token", "span"):
        return task.evaluate(model, examples, batch_size)[0]
    tokenizer = task.tokenizer
    if kind == "words":  # greedy, the label word's length (ClassificationTask._generate_labels)
        words = [task.words.get(label, label) for label in task.labels]
        longest = max(len(tokenizer.encode(word)) + 1 for word in words)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        sources = [feature.input_ids for feature in task.features(examples)]
        texts = generated_texts(model.hf, task, sources, pad, batch_size, (1, longest))
        predicted = [dict(zip(words, task.labels, strict=True)).get(t, t) for t in texts]
        gold = [example.label for example in examples]
        return {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold)}
    options = zero.config.task
    sources = [task.encode_source(example.source) for example in examples]
    search = (options.num_beams, options.max_target_length)
    texts = generated_texts(model.hf, task, sources, task.pad_id, batch_size, search)
    references = [example.references for example in examples]
    if options.kind == "translation":
        return {"bleu": bleu(texts, references)}
    return rouge(texts, references)


def generated_texts(
    hf: nn.Module, task: Any, sources: list[list[int]], pad_id: int, batch_size: int,
    search: tuple[int, int],
) -> list[str]:  # fmt: skip
    """transformers' `generate` on framed sources, `search` = (beams, max new tokens) with the
    task's other settings; batched longest first, as lmforge's seq2seq task batches them."""
    from transformers import GenerationConfig

    num_beams, max_new_tokens = search
    options, tokenizer = task.options, task.tokenizer
    beam = {}
    if num_beams > 1:  # lmforge's BeamConfig: no early stopping
        beam = {"length_penalty": options.length_penalty, "early_stopping": False,
                "no_repeat_ngram_size": options.no_repeat_ngram_size}  # fmt: skip
    generation = GenerationConfig(
        max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
        decoder_start_token_id=task.decoder_start_id, eos_token_id=tokenizer.eos_id,
        pad_token_id=pad_id, **beam,
    )  # fmt: skip
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]), reverse=True)
    texts = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids = pad_batch([sources[i] for i in chunk], pad_id)
        mask = pad_batch([[1] * len(sources[i]) for i in chunk], 0)
        out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=generation)
        for i, row in zip(chunk, out[:, 1:].tolist(), strict=True):  # column 0: decoder start
            tokens = cut_at_eos(row, tokenizer.eos_id)
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return texts
