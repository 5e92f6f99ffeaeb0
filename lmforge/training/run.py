"""Set up a pretraining run: devices, data, run directory, model, optimizer -> a ready Trainer.

Each phase is a function that checks its inputs and says, in one line, what is wrong and how to fix
it, before any long work starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lmforge.config.model import ModelConfig
from lmforge.config.schema import RunConfig
from lmforge.data.shards import TokenDataset, read_manifest
from lmforge.data.tokenizer import Tokenizer, load_tokenizer
from lmforge.distributed.parallelize import parallelize
from lmforge.distributed.setup import barrier, init_distributed
from lmforge.errors import LmforgeError
from lmforge.kernels.dispatch import should_compile
from lmforge.models.lm import build_model
from lmforge.models.stacks import set_activation_checkpointing
from lmforge.models.weights import load_model_weights
from lmforge.objectives.base import build_objective, resolve_objective_kind
from lmforge.run_dir import (
    check_run_dir,
    lock_run_dir,
    remove_leftovers,
    start_clean,
    token_ids,
    write_run_files,
)
from lmforge.training.flops import measure_matmul_peak
from lmforge.training.memory import check_memory
from lmforge.training.optim import build_optimizer
from lmforge.training.precision import Precision, check_fp16_stable
from lmforge.training.sharding import build_sharded_model, load_full_weights
from lmforge.training.trainer import Trainer


def resolve_vocab_size(model: ModelConfig, tokenizer: Tokenizer, *, explicit: bool) -> ModelConfig:
    """Fit the embedding to the tokenizer: rounded up to a multiple of 64 (faster matmuls) unless
    model.vocab_size was given, in which case it must be large enough."""
    if not explicit:
        return dataclasses.replace(model, vocab_size=-(-tokenizer.vocab_size // 64) * 64)
    if tokenizer.vocab_size > model.vocab_size:
        raise LmforgeError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
            f"{model.vocab_size}; raise --model.vocab_size to at least {tokenizer.vocab_size}"
        )
    return model


def load_data(config: RunConfig) -> tuple[TokenDataset, TokenDataset | None, Tokenizer]:
    data_dir = Path(config.data.path)
    manifest = read_manifest(data_dir)
    tokenizer = load_tokenizer(data_dir)
    train = TokenDataset(data_dir, "train")
    # Whether the split is long enough for one sequence is the trainer's to say: only the
    # objective knows how many tokens a sequence of train.seq_len reads.
    has_val = manifest["splits"].get("val", {}).get("num_tokens", 0) > 0
    val = TokenDataset(data_dir, "val") if has_val else None
    return train, val, tokenizer


def open_run_dir(config: RunConfig, *, is_main: bool) -> Path | None:
    """Lock, tidy and check the run directory, then write its files; returns the checkpoint to
    resume from. Only rank 0 locks and writes: the ranks of one job share the directory."""
    run_dir = Path(config.run.dir)
    if is_main:
        lock_run_dir(run_dir)
        # Before the check reads LATEST: a checkpoint caught being replaced is put back.
        remove_leftovers(run_dir)
    barrier()
    resume_from = check_run_dir(config)
    # Every rank decides before rank 0 writes: a slower rank would see a half-made run directory.
    barrier()
    if is_main:
        if resume_from is None:
            start_clean(run_dir)
        write_run_files(config, Path(config.data.path))
    barrier()
    return resume_from


def prepare_trainer(config: RunConfig, *, explicit_keys: set[str] = frozenset()) -> Trainer:
    """Everything between a resolved config and the first training step."""
    context = init_distributed(config.run.device)
    check_fp16_stable(config.train.precision, config.model)
    precision = Precision.from_name(config.train.precision, context.device)
    train_data, val_data, tokenizer = load_data(config)
    model_config = resolve_vocab_size(
        config.model,
        tokenizer,
        # Pretrained weights fix the embedding size.
        explicit="model.vocab_size" in explicit_keys or config.init_from is not None,
    )
    kind = resolve_objective_kind(config.objective, model_config)
    tokens = token_ids(tokenizer, model_config.family, kind)
    model_config = dataclasses.replace(model_config, tokens=tokens)
    config = dataclasses.replace(
        config,
        model=model_config,
        objective=dataclasses.replace(config.objective, kind=kind),
    )
    objective = build_objective(
        config.objective,
        family=model_config.family,
        tokenizer=tokenizer,
        source=config.data.path,
    )
    # Before anything is written or allocated: a run that cannot fit stops here, in one line.
    check_memory(
        build_model(model_config, device="meta"),
        config,
        context,
        precision.dtype,
        shard_factor=context.world_size if config.train.fsdp else 1,
    )
    resume_from = open_run_dir(config, is_main=context.is_main)
    torch.manual_seed(config.run.seed)
    # h15: under FSDP the model is built on meta and sharded before any rank materialises it.
    sharded = config.train.fsdp and context.world_size > 1
    if sharded:
        raw_model = build_sharded_model(model_config, context, config.train)
    else:
        raw_model = build_model(model_config, device=context.device)
    if config.init_from is not None and resume_from is None:
        (load_full_weights if sharded else load_model_weights)(config.init_from, raw_model)
    set_activation_checkpointing(raw_model, config.train.activation_checkpointing)
    model = parallelize(
        raw_model,
        context,
        compile=should_compile(config.train.compile, context.device),
        unused_parameters=raw_model.unused_parameter_names(),
    )
    optimizer = build_optimizer(
        raw_model,
        lr=config.train.lr,
        weight_decay=config.train.weight_decay,
        betas=(config.train.beta1, config.train.beta2),
        optim=config.optim,
    )
    return Trainer(
        config=config,
        model=model,
        raw_model=raw_model,
        optimizer=optimizer,
        objective=objective,
        train_data=train_data,
        val_data=val_data,
        context=context,
        precision=precision,
        matmul_peak=measure_matmul_peak(context.device, precision.dtype),
        resume_from=resume_from,
    )
