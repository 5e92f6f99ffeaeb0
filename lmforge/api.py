"""The Python API, for notebooks and scripts: the same work as the command line, without a shell.

    pretrained = lmforge.load("runs/gpt")          # a run or checkpoint directory
    pretrained.generate("def main(", max_new_tokens=20)
    pretrained.score(["a sentence", "another"])    # log-likelihoods, any family
    lmforge.load("runs/bert").fill_mask("The capital of France is [MASK].")
    lmforge.finetune("classify", "runs/bert", run_dir="runs/cls", train="train.tsv")
    lmforge.load_finetuned("runs/cls").predict(["a new text"])
    lmforge.pretrain(lmforge.config.load_run_config("gpt2-tiny", {...}))

Settings go in as the command line's dotted keys without the dashes, in a dict:
`{"train.lr": 3e-4, "train.max_steps": 100}`. Bad input raises `LmforgeError` with the line the
command line would print. docs/api.md shows each function with a runnable example.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lmforge.config.finetune import load_finetune_config
from lmforge.config.loading import run_config_from_tree, to_dict, user_keys
from lmforge.config.model import ModelConfig
from lmforge.config.schema import RunConfig
from lmforge.data.tokenizer import Tokenizer
from lmforge.distributed.setup import choose_device, cleanup
from lmforge.errors import LmforgeError
from lmforge.generation.text import decoding_configs, generate_text
from lmforge.models.lm import LanguageModel
from lmforge.models.pretrained import load_pretrained
from lmforge.run_dir import load_pretraining_config, unlock_run_dir
from lmforge.tasks import finetuned as finetuned_runs
from lmforge.tasks.base import Task
from lmforge.tasks.fill_mask import MaskPrediction, fill_mask
from lmforge.tasks.scoring import sentence_log_likelihoods
from lmforge.training import finetune as finetuning
from lmforge.training.plot import plot_run
from lmforge.training.run import prepare_trainer

Overrides = Mapping[str, Any]
"""Dotted config keys (as on the command line, without `--`) -> values, e.g. {"train.lr": 3e-4}."""


@dataclass(frozen=True)
class Pretrained:
    """A pretrained model with its tokenizer, as `load` returns it (eval mode)."""

    model: LanguageModel
    tokenizer: Tokenizer
    checkpoint: Path
    """The checkpoint directory the weights came from."""
    path: str
    """The run or checkpoint directory as given to `load`."""

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def family(self) -> str:
        """encoder, decoder or encoder_decoder."""
        return self.model.config.family

    def generate(
        self,
        prompts: str | list[str],
        *,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        num_samples: int = 1,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        early_stopping: bool = False,
        seed: int = 0,
    ) -> list[str]:
        """Texts generated from each prompt, num_samples per prompt in prompt order, as
        `lmforge generate` prints them: a decoder's prompt followed by its continuation, an
        encoder-decoder's output text. temperature 0: greedy; top_k 0 and top_p 1: off;
        num_beams > 1: beam search."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if num_samples < 1:
            raise LmforgeError("--num-samples must be at least 1")
        sampling, beam = decoding_configs(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_beams=num_beams,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            early_stopping=early_stopping,
        )
        rows = [prompt for prompt in prompts for _ in range(num_samples)]
        result = generate_text(
            self.model,
            self.tokenizer,
            rows,
            sampling=sampling,
            beam=beam,
            seed=seed,
            name=self.path,
        )
        return result.texts

    def fill_mask(self, text: str, *, top_k: int = 5) -> list[list[MaskPrediction]]:
        """For each [MASK] (or <mask>) in `text`, the top_k predictions (score, token, sequence),
        most likely first (encoders pretrained with masked language modeling)."""
        return fill_mask(self.model, self.tokenizer, text, top_k=top_k, name=self.path)

    def score(self, texts: str | list[str], *, batch_size: int = 64) -> list[float]:
        """The log-likelihood of each text (nats): decoders sum log p(token | the tokens before),
        encoders give the pseudo-log-likelihood, encoder-decoders that of the text as the target
        (see `lmforge.tasks.scoring`)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return sentence_log_likelihoods(self.model, self.tokenizer, texts, batch_size=batch_size)


def load(path: str | Path, *, device: str = "auto") -> Pretrained:
    """The model and tokenizer of a pretraining run or checkpoint directory (or of a `lmforge
    convert --from-hf` output). device: auto (a CUDA GPU when there is one), cpu or cuda."""
    model, tokenizer, checkpoint = load_pretrained(path, device=choose_device(device))
    return Pretrained(model=model, tokenizer=tokenizer, checkpoint=checkpoint, path=str(path))


@dataclass(frozen=True)
class Finetuned:
    """A fine-tuned run's task (with its labels) and model (best checkpoint, eval mode)."""

    task: Task
    model: nn.Module
    run_dir: Path

    def predict(self, inputs: str | list[str] | Path, *, batch_size: int = 64) -> list[dict]:
        """One row per input, as `lmforge predict` writes them.

        inputs: a text or a list of texts (classify, tag: words split at spaces, seq2seq: the
        source, causal: the prompt), or a `pathlib.Path` to a file in any format `lmforge predict
        --input` reads (every task, sentence pairs and QA included)."""
        if isinstance(inputs, Path):
            examples = self.task.read_inputs(str(inputs))
        else:
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            if not texts:
                raise LmforgeError("give at least one text to predict")
            examples = self.task.inputs_from_texts(texts)
        return self.task.predict(self.model, examples, batch_size)


def load_finetuned(
    run_dir: str | Path, *, device: str = "auto", allow_partial: bool = False
) -> Finetuned:
    """The best checkpoint of a `lmforge finetune` run, ready to predict; a run that never
    finished (no metrics.json) only with `allow_partial`."""
    task, model = finetuned_runs.load_finetuned(run_dir, allow_partial=allow_partial)
    return Finetuned(task=task, model=model.to(choose_device(device)), run_dir=Path(run_dir))


def finetune(
    task: str,
    pretrained: str | Path,
    *,
    run_dir: str | Path,
    train: str | Path,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    overrides: Overrides | None = None,
) -> dict[str, Any]:
    """Fine-tune a pretrained run on `task` (classify, tag, qa, seq2seq, causal) as `lmforge
    finetune` does; returns what it writes to RUN_DIR/metrics.json (best validation metrics,
    best_step, test metrics when a test file is given). `load_finetuned(run_dir)` predicts."""
    keys: dict[str, Any] = {"run.dir": str(run_dir), "data.train": str(train)}
    for key, value in (("data.validation", validation), ("data.test", test)):
        if value is not None:
            keys[key] = str(value)
    config = load_finetune_config(task, str(pretrained), {**keys, **(overrides or {})})
    return finetuning.finetune(config)


@dataclass(frozen=True)
class PretrainingResult:
    run_dir: Path
    metrics: dict[str, float]
    """The last evaluation (step, val_loss, val_perplexity, ...); empty if the run never
    evaluated."""
    is_main: bool
    """Whether this process wrote the run directory (rank 0 under torchrun; always in one
    process)."""


def pretrain(config: RunConfig | str, overrides: Overrides | None = None) -> PretrainingResult:
    """Pretrain as `lmforge pretrain` does, from a RunConfig (e.g.
    `lmforge.config.load_run_config("gpt2-tiny", {...})`) or from a preset name, YAML file or
    run directory, with `overrides` on top. model.vocab_size is fitted to the tokenizer unless
    set in the YAML file or `overrides`. Running it again on the same run.dir resumes."""
    overrides = dict(overrides or {})
    if isinstance(config, RunConfig):
        explicit = set(overrides)
        config = run_config_from_tree(to_dict(config), overrides) if overrides else config
    else:
        explicit = user_keys(config, overrides)
        config = load_pretraining_config(config, overrides)
    try:
        trainer = prepare_trainer(config, explicit_keys=explicit)
        try:
            metrics = trainer.fit()
            if trainer.context.is_main:
                plot_run(trainer.config.run.dir)
        finally:
            cleanup()
    finally:
        unlock_run_dir(Path(config.run.dir))  # the process may go on; the run is over
    return PretrainingResult(Path(trainer.config.run.dir), metrics, trainer.context.is_main)
