"""RunConfig: everything about a run except the architecture (which is ModelConfig).

Sections mirror the command line: `--train.lr=3e-4` sets `RunConfig.train.lr`. Units are on each
field. This module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lmforge.config.model import ModelConfig
from lmforge.errors import LmforgeError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise LmforgeError(message)


def _require_number(name: str, value: float, is_accepted: bool, accepted: str) -> None:
    """Refuse NaN, infinities and values outside the accepted range in one line naming the key.

    `is_accepted` is the range test itself (NaN already fails any comparison; the finiteness test
    catches `inf`, which passes `> 0`)."""
    _require(math.isfinite(value) and is_accepted, f"{name} must be {accepted}, got {value}")


def check_optimizer_numbers(
    section: str, *, lr: float, weight_decay: float, betas: tuple[float, float], grad_clip: float
) -> None:
    """The AdamW settings pretraining and fine-tuning share: lr > 0, weight decay >= 0, betas in
    [0, 1) (beta = 1 never forgets and divides by zero in the bias correction), clip >= 0."""
    _require_number(f"{section}.lr", lr, lr > 0, "a finite number > 0 (e.g. 3e-4)")
    _require_number(f"{section}.weight_decay", weight_decay, weight_decay >= 0, "a number >= 0")
    for index, beta in enumerate(betas, start=1):
        _require_number(f"{section}.beta{index}", beta, 0 <= beta < 1, "in [0, 1)")
    _require_number(
        f"{section}.grad_clip", grad_clip, grad_clip >= 0, "a number >= 0 (0: no clipping)"
    )


def check_guard_numbers(section: str, *, max_bad_steps: int, spike_factor: float) -> None:
    """The divergence guard's settings (training/guard.py), shared by both kinds of training."""
    _require(max_bad_steps >= 1, f"{section}.max_bad_steps must be >= 1, got {max_bad_steps}")
    _require_number(
        f"{section}.spike_factor",
        spike_factor,
        spike_factor == 0 or spike_factor > 1,
        "0 (no spike test) or a number > 1 (e.g. 10)",
    )


@dataclass(frozen=True, kw_only=True)
class RunSection:
    dir: str
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, tensorboard/, curves.png."""
    seed: int = 0
    """Seeds initialisation, data order, dropout and masking."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: the local CUDA device when there is one, else the CPU."""


@dataclass(frozen=True, kw_only=True)
class DataSection:
    path: str
    """A directory written by `lmforge data prepare` (manifest.json, train/, val/)."""


@dataclass(frozen=True, kw_only=True)
class ObjectiveSection:
    kind: Literal["clm", "mlm", "span_corruption", "bart_denoising"] | None = None
    """clm: causal language modeling (predict the next token; decoder models); mlm: masked
    language modeling (encoder models); span_corruption (T5) and bart_denoising (BART):
    encoder-decoder models. None: the model type's (model.default_objective: span_corruption for
    t5-*, bart_denoising for bart-*), else the family's (clm for decoder, mlm for encoder),
    written resolved into config.yaml."""
    mask_rate: float = 0.15
    """mlm only: fraction of the non-special tokens selected for prediction, in (0, 1) (BERT:
    0.15; Wettig et al. 2023 found 0.3-0.4 better for larger models)."""
    whole_word_masking: bool = False
    """mlm only: select whole words (all their pieces together) instead of single tokens."""
    noise_density: float = 0.15
    """span_corruption only: fraction of the raw tokens that are corrupted (T5: 0.15)."""
    mean_noise_span_length: float = 3.0
    """span_corruption only: mean length of a corrupted span, in tokens (T5: 3)."""
    span_target: Literal["spans", "full"] = "spans"
    """span_corruption only: spans: the target lists each sentinel and the tokens it replaced
    (T5); full: the target is the whole original text (the T5 paper's "BERT-style" target, its
    Table 3), which makes the decoder read the encoder from the first steps on."""
    text_infilling: bool = True
    """bart_denoising only: replace Poisson(poisson_lambda)-long spans by one mask token each."""
    infilling_rate: float = 0.3
    """bart_denoising only: fraction of the tokens text infilling masks (BART: 0.3)."""
    poisson_lambda: float = 3.0
    """bart_denoising only: mean span length of text infilling, in tokens (BART: 3)."""
    sentence_permutation: bool = True
    """bart_denoising only: shuffle the sentences of each document."""

    def __post_init__(self) -> None:
        _require(
            0 < self.mask_rate < 1, f"objective.mask_rate must be in (0, 1), got {self.mask_rate}"
        )
        for name in ("noise_density", "infilling_rate"):
            value = getattr(self, name)
            _require(0 < value < 1, f"objective.{name} must be in (0, 1), got {value}")
        _require_number(
            "objective.mean_noise_span_length",
            self.mean_noise_span_length,
            self.mean_noise_span_length >= 1,
            "a finite number >= 1",
        )
        _require_number(
            "objective.poisson_lambda", self.poisson_lambda, self.poisson_lambda > 0, "> 0"
        )


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    max_steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per optimizer step, across accumulation and ranks."""
    micro_batch_size: int | None = None
    """Sequences per forward pass on one rank; None: batch_size / world size (no accumulation)."""
    seq_len: int = 256
    """Tokens per training sequence."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup."""
    min_lr_ratio: float = 0.1
    """Learning rate at max_steps, as a fraction of lr."""
    warmup_steps: int = 100
    decay: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    """wsd: warmup-stable-decay (peak lr until the last decay_fraction of max_steps, then the
    cooldown); a run resumed from its stable phase with a larger max_steps continues at peak."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay; never applied to biases, norms or embeddings."""
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 disables clipping."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of the forward pass; weights and optimizer state stay fp32."""
    compile: bool | Literal["auto"] = "auto"
    """torch.compile the model (slower start, faster steps); auto: on CUDA, not on the CPU."""
    decay_fraction: float = 0.2
    """wsd only: fraction of max_steps the cooldown takes, in (0, 1] (Hägele et al. 2024: 0.2)."""
    cooldown: Literal["linear", "1-sqrt"] = "linear"
    """wsd only: the cooldown's shape from lr to min_lr_ratio * lr (1-sqrt: Hägele et al. 2024)."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass instead of keeping
    them: about one block's activations in memory instead of all of them, for ~1/3 more compute."""
    skip_memory_check: bool = False
    """Start even when the memory estimate (training/memory.py) exceeds the device's free memory."""
    max_bad_steps: int = 5
    """Divergence guard (docs/reliability.md): an update whose loss or gradient norm is not finite,
    or whose loss spikes, is skipped; this many skipped in a row and the run has diverged (what
    then: on_divergence)."""
    spike_factor: float = 10.0
    """A loss above this many times the moving average of the accepted ones (about the last 50
    steps; an average under 1 nat counts as 1) is a spike and its update is skipped; 0: no spike
    test."""
    on_divergence: Literal["stop", "rollback"] = "stop"
    """stop: end with one error line naming the last good checkpoint; rollback: continue from
    that checkpoint with the learning rate times rollback_lr_factor (at most max_rollbacks times,
    then stop)."""
    rollback_lr_factor: float = 0.5
    """Multiplies the learning rate at each rollback, in (0, 1]."""
    max_rollbacks: int = 3
    """Rollbacks allowed in one run before it stops."""
    fsdp: bool = False
    """Shard parameters, gradients and optimizer state over the ranks (FSDP2: each transformer
    block, then the rest) instead of replicating them (DDP); checkpoints are then sharded
    (torch.distributed.checkpoint). One process trains unsharded but still writes sharded
    checkpoints, so a run can move between world sizes (docs/architecture.md)."""
    fsdp_cpu_offload: bool = False
    """fsdp only: keep the sharded parameters, gradients and optimizer state in host memory and
    step the optimizer there (frees GPU memory; on the CPU it changes nothing)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "seq_len"):
            value = getattr(self, name)
            _require(value > 0, f"train.{name} must be > 0, got {value}")
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
            "train.min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "in [0, 1]"
        )
        _require(
            self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}"
        )
        check_guard_numbers(
            "train", max_bad_steps=self.max_bad_steps, spike_factor=self.spike_factor
        )
        _require_number(
            "train.rollback_lr_factor",
            self.rollback_lr_factor,
            0 < self.rollback_lr_factor <= 1,
            "in (0, 1]",
        )
        _require(
            self.max_rollbacks >= 0, f"train.max_rollbacks must be >= 0, got {self.max_rollbacks}"
        )
        _require_number(
            "train.decay_fraction", self.decay_fraction, 0 < self.decay_fraction <= 1, "in (0, 1]"
        )
        _require(
            self.fsdp or not self.fsdp_cpu_offload,
            "train.fsdp_cpu_offload needs --train.fsdp=true",
        )
        _require(
            not (self.fsdp and self.precision == "fp16"),
            "train.fsdp does not support train.precision=fp16 (its gradient scaler cannot see "
            "sharded gradients); use --train.precision=bf16",
        )


@dataclass(frozen=True, kw_only=True)
class OptimSection:
    kind: Literal["adamw", "muon", "adafactor"] = "adamw"
    """adamw: AdamW for every parameter; muon: Muon for the 2-D weights inside transformer blocks
    (attention and MLP projections), AdamW (train.lr, train.weight_decay) for the rest;
    adafactor: torch's Adafactor for every parameter, train.lr capping its relative step size
    (training/optim.py's Adafactor)."""
    muon_lr: float | None = None
    """muon only: peak learning rate of the Muon weights; None: train.lr (with the default
    muon_adjust_lr, Muon's update has AdamW's RMS, so one rate can serve both)."""
    muon_momentum: float = 0.95
    """muon only: momentum of the gradient average that is orthogonalised, in [0, 1)."""
    muon_nesterov: bool = True
    """muon only: orthogonalise the Nesterov look-ahead rather than the momentum buffer."""
    muon_weight_decay: float | None = None
    """muon only: decoupled weight decay of the Muon weights; None: train.weight_decay."""
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    """muon only: match_rms_adamw scales each update by 0.2 sqrt(max(rows, cols)) (Moonlight:
    AdamW's learning rates carry over); original by sqrt(max(1, rows / cols)) (Keller Jordan's,
    whose rates are ~0.02)."""

    def __post_init__(self) -> None:
        if self.muon_lr is not None:
            _require_number("optim.muon_lr", self.muon_lr, self.muon_lr > 0, "> 0")
        _require_number(
            "optim.muon_momentum", self.muon_momentum, 0 <= self.muon_momentum < 1, "in [0, 1)"
        )
        if self.muon_weight_decay is not None:
            _require_number(
                "optim.muon_weight_decay",
                self.muon_weight_decay,
                self.muon_weight_decay >= 0,
                ">= 0",
            )


@dataclass(frozen=True, kw_only=True)
class EvalSection:
    every: int = 200
    """Evaluate every this many optimizer steps (and after the last); 0: only after the last."""
    max_batches: int = 50
    """Micro-batches of the validation split per evaluation; 0: the whole split."""

    def __post_init__(self) -> None:
        for name in ("every", "max_batches"):
            value = getattr(self, name)
            _require(value >= 0, f"eval.{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class CheckpointSection:
    every: int = 500
    """Save every this many optimizer steps (and after the last); 0: only after the last."""
    keep_last: int = 3
    """Checkpoints kept on disk; older ones are deleted; 0: keep all."""
    keep_best: bool = True
    """Also keep the weights of the lowest validation loss so far in checkpoints/best (saved at
    any evaluation that improves on it, checkpoint step or not); costs one set of weights on
    disk, a third of a checkpoint with AdamW. Resuming still continues from LATEST."""

    def __post_init__(self) -> None:
        for name in ("every", "keep_last"):
            value = getattr(self, name)
            _require(value >= 0, f"checkpoint.{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class LogSection:
    every: int = 10
    """Write a metrics.jsonl row every this many optimizer steps (and after the last); 0: only
    after the last."""
    tensorboard: bool = True
    """Mirror metrics to RUN_DIR/tensorboard when tensorboard is installed."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self) -> None:
        _require(self.every >= 0, f"log.every must be >= 0, got {self.every}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: ModelConfig
    run: RunSection
    data: DataSection
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    optim: OptimSection = field(default_factory=OptimSection)
    resume: str = "auto"
    """auto: continue from RUN_DIR's newest checkpoint if there is one; never; or a checkpoint
    path."""
    init_from: str | None = None
    """Start from the weights of this run or checkpoint (e.g. one made by `lmforge convert
    --from-hf`) at step 0 with a fresh optimizer; set by `lmforge pretrain RUN_OR_CHECKPOINT`."""

    def __post_init__(self) -> None:
        max_len = self.model.max_seq_len
        if max_len is not None and self.train.seq_len > max_len:
            raise LmforgeError(
                f"train.seq_len={self.train.seq_len} exceeds the model's "
                f"{self.model.position.kind} positions (model.position.max_positions={max_len}); "
                f"lower --train.seq_len or raise --model.position.max_positions"
            )
        # Muon orthogonalises whole matrices; FSDP gives each rank a slice of each.
        _require(
            not (self.train.fsdp and self.optim.kind == "muon"),
            "optim.kind=muon needs whole weight matrices and train.fsdp shards them; "
            "use --optim.kind=adamw with FSDP, or DDP (--train.fsdp=false) with Muon",
        )
