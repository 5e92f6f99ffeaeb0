"""Zero- and few-shot classification with a decoder: no training, the label is the verbalizer the
model finds most likely after the prompt (Radford et al. 2019; Brown et al. 2020, section 2).

Each label has a word (its verbalizer, e.g. 1 -> "positive"). An example is written into a template
("Review: {text}\\nSentiment:"), optionally after K solved demonstrations separated by blank lines,

    Review: a gorgeous , witty film .\\nSentiment: positive
    <blank line>
    Review: one long string of cliches .\\nSentiment: negative
    <blank line>
    Review: {the query}\\nSentiment:

and each label is scored by the log-likelihood of " WORD" given that context: the sum of the
log-probabilities of its tokens, or their mean (normalize="length", which favours no label for
being tokenized into fewer pieces). The prediction is the best-scoring label.

A prompt favours some labels whatever the input (small models often name one label for every
example). Contextual calibration (Zhao et al. 2021, "Calibrate Before Use") measures that bias on
content-free inputs ("N/A", "", "[MASK]" in place of every text, same demonstrations) and divides
it out: with p the label probabilities renormalised over the labels and p_cf their mean over the
content-free inputs, the calibrated score is log p(label | x) - log p_cf(label).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmforge.data.labelled import ClassificationExample
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.evaluation.classification import accuracy, macro_f1
from lmforge.models.lm import DecoderModel
from lmforge.tasks.base import pad_batch


@dataclass(frozen=True)
class Verbalizer:
    """How examples become text: the template, its fields, the word of each label."""

    template: str
    """Prompt with a `{FIELD}` placeholder per text field; `\\n` written literally is a newline."""
    fields: tuple[str, ...]
    """Names of the example's texts, in order (the placeholders the template may use)."""
    label_words: dict[str, str]
    """Label -> the word scored for it; the dict's order breaks ties (first wins)."""

    def prompt(self, example: ClassificationExample) -> str:
        values = dict(zip(self.fields, example.texts, strict=False))
        try:
            return self.template.format_map(values)
        except KeyError as error:
            raise LmforgeError(
                f"the template names {{{error.args[0]}}} but the examples have only "
                f"{', '.join('{' + f + '}' for f in self.fields)}; fix --template or --text-fields"
            ) from None
        except (ValueError, IndexError):
            raise LmforgeError(
                f"cannot fill the template {self.template!r}: write placeholders as {{FIELD}} and "
                "literal braces as {{ and }}"
            ) from None

    def continuation(self, label: str, prompt: str) -> str:
        """The text scored for `label` after `prompt`: its word, after a space unless the prompt
        already ends with whitespace (byte-level BPE tokenizes " positive" as one word)."""
        word = self.label_words[label]
        return word if not prompt or prompt[-1].isspace() else " " + word

    def demonstration(self, example: ClassificationExample) -> str:
        assert example.label is not None
        prompt = self.prompt(example)
        return prompt + self.continuation(example.label, prompt)


def default_template(fields: Sequence[str]) -> str:
    """One line per text field, then `Answer:`."""
    return "\n".join("{" + field + "}" for field in fields) + "\nAnswer:"


def parse_label_words(spec: str, labels: Sequence[str]) -> dict[str, str]:
    """`0=negative,1=positive` -> {"0": "negative", "1": "positive"}; empty: each of `labels` is
    its own word."""
    if not spec.strip():
        if not labels:
            raise LmforgeError("no labels to score: give --label-words LABEL=WORD,...")
        return {label: label for label in labels}
    words: dict[str, str] = {}
    for item in spec.split(","):
        label, has_equals, word = (part.strip() for part in item.partition("="))
        if not has_equals or not label or not word:
            raise LmforgeError(
                f"--label-words takes LABEL=WORD pairs separated by commas, e.g. "
                f"0=negative,1=positive (got {item.strip()!r})"
            )
        if label in words:
            raise LmforgeError(f"--label-words gives label {label!r} twice")
        words[label] = word
    if len(set(words.values())) < len(words):
        raise LmforgeError("--label-words gives two labels the same word; they could not differ")
    return words


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def check_labels(
    examples: Sequence[ClassificationExample], words: dict[str, str], path: str
) -> None:
    """Refuse examples without a label or with a label that has no word."""
    for index, example in enumerate(examples, start=1):
        if example.label is None:
            raise LmforgeError(
                f"{path}: example {index} has no label; zero-shot evaluation needs one"
            )
        if example.label not in words:
            raise LmforgeError(
                f"{path}: label {example.label!r} (example {index}) has no word in --label-words "
                f"({', '.join(words)}); add it, e.g. {example.label}=WORD"
            )


def choose_demonstrations(
    train: Sequence[ClassificationExample], shots: int, labels: Sequence[str], seed: int
) -> list[ClassificationExample]:
    """`shots` training examples drawn with `seed`, as class-balanced as the training set allows
    (K // C per class, the remainder to randomly chosen classes, a class short of examples
    topped up from the others), in random order."""
    rng = random.Random(seed)
    by_label: dict[str, list[ClassificationExample]] = defaultdict(list)
    for example in train:
        if example.label in labels:
            by_label[example.label].append(example)
    available = [label for label in labels if by_label[label]]
    if sum(len(by_label[label]) for label in available) < shots:
        raise LmforgeError(
            f"--shots {shots} needs as many labelled training examples with a label word; "
            f"the training file has {sum(len(by_label[label]) for label in available)}"
        )
    pools = {label: rng.sample(by_label[label], len(by_label[label])) for label in available}
    quota = dict.fromkeys(available, shots // len(available))
    for label in rng.sample(available, shots % len(available)):
        quota[label] += 1
    chosen = []
    for label in available:
        chosen += pools[label][: quota[label]]
        pools[label] = pools[label][quota[label] :]
    leftovers = [example for label in available for example in pools[label]]
    chosen += rng.sample(leftovers, shots - len(chosen))
    rng.shuffle(chosen)
    return chosen


def build_context(
    verbalizer: Verbalizer, demonstrations: Sequence[ClassificationExample],
    example: ClassificationExample,
) -> str:  # fmt: skip
    """Demonstrations (template + " " + word), then the query's prompt, blank lines between."""
    parts = [verbalizer.demonstration(demo) for demo in demonstrations]
    return "\n\n".join([*parts, verbalizer.prompt(example)])


# --- scoring ------------------------------------------------------------------------------------


@torch.no_grad()
def continuation_log_probs(
    model: DecoderModel,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    vocab_size: int,
    batch_size: int,
) -> list[torch.Tensor]:
    """For each (context, continuation) of token ids, the log-probability of every continuation
    token given all tokens before it: a (len(continuation),) float32 tensor. Contexts must not be
    empty (start them with the separator). One forward per batch of `batch_size` sequences."""
    device = model.token_embed.weight.device
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids = pad_batch([pairs[i][0] + pairs[i][1] for i in rows], 0).to(device)
        # Right padding needs no attention mask in a causal model: real tokens never look right.
        hidden = model.hidden_states(input_ids)  # (B, T, D)
        # Position t predicts token t + 1: a continuation after a context of length c is
        # predicted from positions c - 1 ... c + len(continuation) - 2.
        row_index, positions, lengths = [], [], []
        for b, i in enumerate(rows):
            context, continuation = pairs[i]
            row_index += [b] * len(continuation)
            positions += range(len(context) - 1, len(context) + len(continuation) - 1)
            lengths.append(len(continuation))
        targets = input_ids[row_index, [p + 1 for p in positions]]  # (M,)
        # Project only the M scored positions onto the vocabulary, not all B * T.
        logits = model.lm_head(hidden[row_index, positions], model.token_embed.weight).float()
        logits[:, vocab_size:] = float("-inf")  # rows past the tokenizer's vocabulary: no token
        scores = logits.log_softmax(dim=-1).gather(1, targets[:, None]).squeeze(1).cpu()  # (M,)
        for i, part in zip(rows, scores.split(lengths), strict=True):
            results[i] = part
    return results


@torch.no_grad()
def score_labels(
    model: DecoderModel,
    tokenizer: Tokenizer,
    verbalizer: Verbalizer,
    contexts: Sequence[str],
    *,
    normalize: str = "none",
    batch_size: int = 16,
) -> list[dict[str, float]]:
    """Score of every label (in label_words order) after each context: the summed (normalize
    "none") or mean ("length") log-probability of its continuation's tokens. Contexts longer than
    the model's positions lose their start (the separator stays first)."""
    labels = list(verbalizer.label_words)
    limit = model.config.max_seq_len
    start = tokenizer.separator_id
    pairs = []
    for context, context_ids in zip(contexts, tokenizer.encode_batch(list(contexts)), strict=True):
        for label in labels:
            continuation = tokenizer.encode(verbalizer.continuation(label, context))
            if not continuation:
                raise LmforgeError(f"the word of label {label!r} tokenizes to nothing")
            keep = len(context_ids) if limit is None else limit - 1 - len(continuation)
            if keep < 1:
                raise LmforgeError(
                    f"the word of label {label!r} fills the model's {limit} positions"
                )
            pairs.append(([start, *context_ids[max(0, len(context_ids) - keep) :]], continuation))
    log_probs = continuation_log_probs(
        model, pairs, vocab_size=tokenizer.vocab_size, batch_size=batch_size * len(labels)
    )
    scores = []
    for index in range(len(contexts)):
        row = log_probs[index * len(labels) : (index + 1) * len(labels)]
        reduce = torch.mean if normalize == "length" else torch.sum
        scores.append({label: float(reduce(lp)) for label, lp in zip(labels, row, strict=True)})
    return scores


CONTENT_FREE_TEXTS = ("N/A", "", "[MASK]")
"""The content-free inputs of Zhao et al. (2021), section 5."""


def content_free_examples(num_fields: int) -> list[ClassificationExample]:
    """One unlabelled example per content-free text, that text in every field."""
    return [ClassificationExample((text,) * num_fields, None) for text in CONTENT_FREE_TEXTS]


def calibrate(
    scores: Sequence[dict[str, float]], content_free_scores: Sequence[dict[str, float]]
) -> list[dict[str, float]]:
    """Contextual calibration: each example's log p(label | x), renormalised over the labels,
    minus the log of the mean renormalised probability the content-free inputs give the label."""
    labels = list(content_free_scores[0])

    def renormalised(row: dict[str, float]) -> torch.Tensor:
        return torch.tensor([row[label] for label in labels], dtype=torch.float64).log_softmax(0)

    bias = torch.stack([renormalised(row).exp() for row in content_free_scores]).mean(0).log()
    return [dict(zip(labels, (renormalised(row) - bias).tolist(), strict=True)) for row in scores]


def predict_label(scores: dict[str, float]) -> str:
    """The best-scoring label; ties go to the first in label_words order."""
    return max(scores, key=scores.__getitem__)


# --- baselines ----------------------------------------------------------------------------------


def baselines(references: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (points) of always predicting the most frequent reference label, and
    the expected ones of predicting one of `labels` uniformly at random (F1 from the expected
    counts: class c of n_c among N gets TP = n_c / L of N / L predictions, so
    F1 = 2 n_c / (N + L n_c))."""
    counts = Counter(references)
    majority = [counts.most_common(1)[0][0]] * len(references)
    total, num_labels = len(references), len(labels)
    random_f1 = [2 * counts[label] / (total + num_labels * counts[label]) for label in labels]
    return {
        "majority_accuracy": accuracy(majority, references),
        "majority_macro_f1": macro_f1(majority, references),
        "random_accuracy": 100.0 / num_labels,
        "random_macro_f1": 100.0 * sum(random_f1) / num_labels,
    }
