"""FinetuneConfig: the settings of `lmforge finetune TASK PRETRAINED`.

Like RunConfig it is a tree of frozen dataclasses set from the command line with dotted keys
(`--train.lr=5e-5`, `--task.max_length=128`). The `task` section depends on the task: each task has
its own options class, registered with the task in TASKS, the one list of tasks. The architecture
is not here: it comes with the pretrained checkpoint. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.config.loading import _set_nested, from_dict, parse_overrides, read_yaml
from lmforge.config.schema import (
    LogSection,
    RunSection,
    _require,
    _require_number,
    check_guard_numbers,
    check_optimizer_numbers,
)
from lmforge.errors import LmforgeError


@dataclass(frozen=True, kw_only=True)
class FinetuneDataSection:
    train: str
    """Training examples: a file in the task's format (see `lmforge finetune TASK --help`)."""
    validation: str | None = None
    """Validation examples, same format; the best checkpoint is chosen on them."""
    test: str | None = None
    """Optional test examples, evaluated once with the best checkpoint at the end."""
    validation_split: float = 0.0
    """Without a validation file: hold out this fraction of the training file (whole groups where
    the task has them, e.g. SQuAD articles), always the last ones in file order."""
    max_train_examples: int = 0
    """Use only the first this many training examples; 0: all."""
    max_eval_examples: int = 0
    """Evaluate on only the first this many validation/test examples; 0: all."""

    def __post_init__(self) -> None:
        _require(
            0 <= self.validation_split < 1,
            f"data.validation_split must be in [0, 1), got {self.validation_split}",
        )
        _require(
            self.validation is None or self.validation_split == 0,
            "give data.validation or data.validation_split, not both",
        )
        _require(self.max_train_examples >= 0, "data.max_train_examples must be >= 0")
        _require(self.max_eval_examples >= 0, "data.max_eval_examples must be >= 0")


@dataclass(frozen=True, kw_only=True)
class FinetuneTrainSection:
    epochs: float = 3.0
    """Passes over the training examples (fractions allowed); ignored when max_steps > 0."""
    max_steps: int = 0
    """Optimizer steps; 0: as many as `epochs` takes."""
    batch_size: int = 32
    """Examples (features, for QA windows) per optimizer step."""
    micro_batch_size: int | None = None
    """Examples per forward pass; None: batch_size (no accumulation)."""
    lr: float = 1e-4
    """Peak learning rate, reached after warmup, then linear decay to 0 (BERT's schedule)."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming up."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; never applied to biases, norms or embeddings."""
    beta1: float = 0.9
    beta2: float = 0.999
    # --- issue 12 (h12-downstream): the optimizer choice ---
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    """adamw; adafactor: torch's Adafactor as T5 was fine-tuned with it (lr 1e-3 caps its step
    relative to each parameter's scale; beta1/beta2 unused; training/optim.py's Adafactor)."""
    # --- end issue 12 ---
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 disables clipping."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of the forward pass; weights and optimizer state stay fp32."""
    init: Literal["pretrained", "random"] = "pretrained"
    """pretrained: start from the checkpoint's weights; random: the same architecture and
    tokenizer freshly initialised (the baseline that shows what pretraining brings)."""
    dropout: float | None = None
    """Dropout of the model during fine-tuning; None: the pretrained model's setting (0.1 for the
    classification/tagging/QA head's own dropout when that is 0)."""
    max_bad_steps: int = 5
    """Divergence guard (docs/reliability.md): an update whose loss or gradient norm is not finite,
    or whose loss spikes, is skipped; this many skipped in a row and the run stops with one line
    (the best checkpoint so far is kept)."""
    spike_factor: float = 10.0
    """A loss above this many times the moving average of the accepted ones (about the last 50
    steps; an average under 1 nat counts as 1) is a spike and its update is skipped; 0: no spike
    test."""

    def __post_init__(self) -> None:
        _require_number("train.epochs", self.epochs, self.epochs > 0, "a finite number > 0")
        _require(self.max_steps >= 0, f"train.max_steps must be >= 0, got {self.max_steps}")
        _require(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        _require(
            self.micro_batch_size is None or self.micro_batch_size > 0,
            "train.micro_batch_size must be > 0",
        )
        check_optimizer_numbers(
            "train",
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=(self.beta1, self.beta2),
            grad_clip=self.grad_clip,
        )
        _require_number(
            "train.warmup_ratio", self.warmup_ratio, 0 <= self.warmup_ratio < 1, "in [0, 1)"
        )
        if self.dropout is not None:
            _require_number("train.dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)")
        check_guard_numbers(
            "train", max_bad_steps=self.max_bad_steps, spike_factor=self.spike_factor
        )


@dataclass(frozen=True, kw_only=True)
class FinetuneEvalSection:
    every: int = 0
    """Evaluate every this many optimizer steps (and after the last); 0: after every epoch."""
    patience: int = 0
    """Early stopping: stop after this many evaluations without a better validation metric;
    0: never stop early."""
    batch_size: int = 64
    """Examples per forward pass during evaluation."""

    def __post_init__(self) -> None:
        for name in ("every", "patience"):
            value = getattr(self, name)
            _require(value >= 0, f"eval.{name} must be >= 0, got {value}")
        _require(self.batch_size > 0, f"eval.batch_size must be > 0, got {self.batch_size}")


# --- task options -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClassifyOptions:
    text_fields: str = "text"
    """Comma-separated text columns of csv/tsv/jsonl files: one (single sentence) or two (a
    sentence pair, e.g. `premise,hypothesis`). Plain `LABEL TEXT` files (SST, TREC) need none."""
    label_field: str = "label"
    """Label column of csv/tsv/jsonl files."""
    max_length: int = 128
    """Tokens per example including special tokens; longer texts are truncated."""
    label_words: str = ""
    """Seq2seq models generate a word per label: `LABEL=WORD,...` (e.g. `0=negative,1=positive`);
    empty: the label itself."""
    prefix: str = ""
    """Text put before every input, T5 style (e.g. `sst2 sentence: `)."""
    labels: str = ""
    """The label set, comma-separated, in class order (e.g. `0,1` or `neg,neu,pos`); empty: the
    labels of the training file. A label outside it, in any file, is refused (file and line)."""

    def __post_init__(self) -> None:
        _require(self.max_length >= 8, "task.max_length must be >= 8")
        fields = [f for f in self.text_fields.split(",") if f.strip()]
        _require(
            1 <= len(fields) <= 2, "task.text_fields names one or two columns, e.g. text or a,b"
        )


@dataclass(frozen=True, kw_only=True)
class TagOptions:
    max_length: int = 128
    """Tokens per sentence including special tokens; words beyond it get no prediction (O)."""
    scheme: Literal["auto", "iob1", "bio2", "iobes"] = "auto"
    """Tag scheme of the files: auto detects IOB1 (CoNLL-2003's original), BIO2 or IOBES per file.
    Labels are trained and predicted in BIO2; predictions are written in the input scheme."""

    def __post_init__(self) -> None:
        _require(self.max_length >= 4, "task.max_length must be >= 4")


@dataclass(frozen=True, kw_only=True)
class QAOptions:
    max_length: int = 384
    """Tokens per window: special tokens + question + a slice of the context."""
    stride: int = 128
    """Tokens of context shared by consecutive windows of a long context."""
    max_question_length: int = 64
    """Questions are truncated to this many tokens."""
    max_answer_length: int = 30
    """Longest answer span considered when decoding, in tokens."""
    n_best: int = 20
    """Start and end candidates per window considered when decoding."""

    def __post_init__(self) -> None:
        _require(
            # 4 special tokens at most (RoBERTa's <s> question </s></s> context </s>), so every
            # window moves on by at least one context token.
            0 <= self.stride < self.max_length - self.max_question_length - 4,
            "task.stride must leave room: stride < max_length - max_question_length - 4",
        )
        _require(self.max_answer_length >= 1, "task.max_answer_length must be >= 1")
        _require(self.n_best >= 1, "task.n_best must be >= 1")


@dataclass(frozen=True, kw_only=True)
class Seq2SeqOptions:
    kind: Literal["translation", "summarization", "qa"] = "translation"
    """Decides the metric: translation BLEU, summarization ROUGE-1/2/L, qa SQuAD EM/F1."""
    source_field: str = "source"
    """Field (jsonl) or first column (tsv) of the input text; a list of strings is joined with
    spaces (SciTLDR's sentences)."""
    target_field: str = "target"
    """Field (jsonl) or second column (tsv) of the reference; a list is several references, the
    first of which is trained on."""
    source_lang: str = ""
    """Parallel text files: data paths are prefixes, read as PATH.SOURCE_LANG and PATH.TARGET_LANG
    (e.g. --data.train=multi30k/train --task.source_lang=en --task.target_lang=de)."""
    target_lang: str = ""
    prefix: str = ""
    """Text put before every input, T5 style (e.g. `translate English to German: `)."""
    max_source_length: int = 256
    max_target_length: int = 64
    """Tokens; longer texts are truncated (and generation stops there)."""
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        _require(self.num_beams >= 1, f"task.num_beams must be >= 1, got {self.num_beams}")
        _require(
            bool(self.source_lang) == bool(self.target_lang),
            "give both task.source_lang and task.target_lang, or neither",
        )


@dataclass(frozen=True, kw_only=True)
class CausalOptions:
    prompt_field: str = "prompt"
    """Field of the jsonl (or first tsv column) that conditions the response; no loss on it."""
    response_field: str = "response"
    """Field (or second tsv column) the model learns to produce; the loss is on these tokens."""
    max_length: int = 256
    """Tokens of prompt + response; the prompt is truncated from the left to fit."""
    max_new_tokens: int = 64
    """Tokens generated per prompt when evaluating and predicting."""

    def __post_init__(self) -> None:
        _require(self.max_length >= 8, "task.max_length must be >= 8")
        _require(self.max_new_tokens >= 1, "task.max_new_tokens must be >= 1")


# --- the task registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskEntry:
    """One `lmforge finetune` task, registered once in TASKS."""

    options: type
    """The dataclass of its `task` section."""
    task_class: str
    """Its Task subclass as "module:Class", imported only when the task runs (this module imports
    no torch, and each task pulls in only its own dependencies)."""
    description: str
    """One line for `lmforge finetune --help`: what it learns from which files."""


TASKS: dict[str, TaskEntry] = {
    "classify": TaskEntry(
        ClassifyOptions,
        "lmforge.tasks.classification:ClassificationTask",
        "sentence (pair) classification: csv/tsv/jsonl or `LABEL TEXT` lines (SST, TREC)",
    ),
    "tag": TaskEntry(
        TagOptions,
        "lmforge.tasks.ner:TaggingTask",
        "token classification (NER) from CoNLL files, IOB1 or BIO2",
    ),
    "qa": TaskEntry(
        QAOptions,
        "lmforge.tasks.qa:ExtractiveQATask",
        "extractive question answering from SQuAD-format JSON",
    ),
    "seq2seq": TaskEntry(
        Seq2SeqOptions,
        "lmforge.tasks.seq2seq:Seq2SeqTask",
        "translation, summarization, generative QA (encoder-decoder models)",
    ),
    "causal": TaskEntry(
        CausalOptions,
        "lmforge.tasks.causal:CausalTask",
        "prompt/response pairs, loss on the response only (decoder models)",
    ),
}
"""Every fine-tuning task by its `lmforge finetune` name; the only list of tasks."""


def task_entry(name: str) -> TaskEntry:
    """The registered task `name`, or one line naming the choices."""
    if name not in TASKS:
        raise LmforgeError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    task_name: str
    """A key of TASKS."""
    pretrained: str
    """The run or checkpoint directory fine-tuned from (pretraining or `convert --from-hf`)."""
    run: RunSection
    data: FinetuneDataSection
    task: object
    """The options of `task_name`, an instance of TASKS[task_name].options."""
    train: FinetuneTrainSection = field(default_factory=FinetuneTrainSection)
    eval: FinetuneEvalSection = field(default_factory=FinetuneEvalSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        options = task_entry(self.task_name).options
        _require(
            isinstance(self.task, options),
            f"task options of {self.task_name} must be {options.__name__}, "
            f"got {type(self.task).__name__}",
        )


def load_finetune_config(
    task_name: str, pretrained: str, overrides: list[str] | dict[str, str]
) -> FinetuneConfig:
    """Command-line overrides (and an optional `--config FILE.yaml` of the same sections) into a
    FinetuneConfig for `task_name`."""
    options = task_entry(task_name).options
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides)
    raw: dict = {}
    if "config" in overrides:
        raw = read_yaml(Path(overrides.pop("config")))
    for key, value in overrides.items():
        _set_nested(raw, key, value)
    sections = {
        "run": RunSection,
        "data": FinetuneDataSection,
        "task": options,
        "train": FinetuneTrainSection,
        "eval": FinetuneEvalSection,
        "log": LogSection,
    }
    unknown = [key for key in raw if key not in sections]
    if unknown:
        raise LmforgeError(
            f"unknown config key {unknown[0]}; valid sections: {', '.join(sections)}"
        )
    values = {
        name: from_dict(cls, raw.get(name, {}), prefix=f"{name}.") for name, cls in sections.items()
    }
    return FinetuneConfig(task_name=task_name, pretrained=pretrained, **values)
