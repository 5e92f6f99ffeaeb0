"""`lmforge convert`: Hugging Face `transformers` folders <-> lmforge checkpoints.

    lmforge convert --from-hf HF_DIR OUT      HF folder -> run directory OUT (checkpoint at step 0,
                                              tokenizer.json + special_tokens.json)
    lmforge convert --to-hf RUN_OR_CKPT OUT   lmforge run or checkpoint -> HF folder (config.json,
                                              model.safetensors, tokenizer files)
    lmforge convert --to-hf FINETUNE_RUN OUT  a fine-tuning run -> the HF task model (classify, tag,
                                              qa: BertForSequenceClassification, ...; seq2seq and
                                              generative classify: the seq2seq model)
    lmforge convert --consolidate RUN [--step N]   a sharded (--train.fsdp) checkpoint -> its
                                              model.safetensors, beside the shards (LATEST's, or
                                              step N's; the last one of a run has it already)

Reading never runs code from the files: weights are read from safetensors only (a folder
holding only pickled pytorch_model.bin weights is refused, with the command that converts them),
and no remote code runs. A broken input (malformed config.json, truncated or missing weight
files, unreadable tokenizer files) is one `error:` line. The converted run holds weights and no
optimizer state: `generate` and `load_pretrained` use it directly, and `lmforge pretrain OUT
--data.path=DATA --run.dir=RUN` continues pretraining from its weights (step 0, fresh
optimizer). The exported tokenizer frames texts as the model read them in lmforge ([CLS] a
[SEP], <s> a </s>, a </s>; a fine-tuned model as its task), so that transformers' pipelines feed
the model what lmforge feeds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command imports its dependencies when it runs
    from lmforge.config.model import ModelConfig
    from lmforge.data.framing import Framing
    from lmforge.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_HF_HEADS = {"classify": "sequence", "tag": "token", "qa": "span"}
"""Fine-tuning task -> the kind of transformers task class its model exports to (interop.hf)."""

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")  # fmt: skip
"""Files any of which makes a folder hold a tokenizer (fast, or slow ones transformers converts)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert between Hugging Face transformers folders and lmforge checkpoints",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-hf", metavar="HF_DIR", help="a saved transformers model folder")
    direction.add_argument("--to-hf", metavar="RUN_OR_CHECKPOINT", help="an lmforge run/checkpoint")
    direction.add_argument(
        "--consolidate", metavar="RUN", help="write a sharded checkpoint's model.safetensors"
    )
    parser.add_argument(
        "out",
        metavar="OUT",
        nargs="?",
        help="the folder to write (must not exist; not with --consolidate)",
    )
    parser.add_argument(
        "--step", type=int, help="--consolidate only: the checkpoint of this step (default LATEST)"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="--to-hf: export a fine-tuning run that never finished (its best checkpoint so far)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.errors import LmforgeError

    if args.consolidate is not None or args.step is not None:
        return _consolidate(args)
    if args.out is None:
        raise LmforgeError("convert needs OUT, the folder to write")
    out = Path(args.out)
    if out.exists():
        raise LmforgeError(f"{out} already exists; choose a new output folder")
    if args.from_hf is not None:
        from_hf(Path(args.from_hf), out)
    else:
        to_hf(Path(args.to_hf), out, allow_partial=args.allow_partial)
    print(out)
    return 0


def _consolidate(args: argparse.Namespace) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.training.sharded_checkpoint import consolidate

    if args.consolidate is None:
        raise LmforgeError("--step goes with --consolidate RUN")
    if args.out is not None:
        raise LmforgeError("--consolidate writes into the checkpoint itself; drop OUT")
    print(consolidate(Path(args.consolidate), args.step))
    return 0


def from_hf(hf_dir: Path, out: Path) -> None:
    """Write `hf_dir` as an lmforge run directory `out` with its checkpoint at step 0."""
    from lmforge.interop.hf import load_hf_model_dir
    from lmforge.models.lm import build_model
    from lmforge.run_dir import fill_token_ids
    from lmforge.training.checkpoint import save_checkpoint

    cfg, state_dict = load_hf_model_dir(hf_dir)
    tokenizer = _hf_tokenizer(hf_dir)
    if tokenizer is not None:  # ids the HF config leaves out, as the tokenizer's roles say
        cfg = fill_token_ids(cfg, tokenizer)
    model = build_model(cfg)
    model.load_state_dict(state_dict)
    out.mkdir(parents=True)
    try:
        if tokenizer is not None:
            tokenizer.save(out)
        else:
            logger.warning("no tokenizer in %s: add tokenizer.json to %s before generating",
                           hf_dir, out)  # fmt: skip
        state = {"converted_from": str(hf_dir)}
        save_checkpoint(out, 0, model, None, state, dataclasses.asdict(cfg), keep_last=0)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _hf_tokenizer(hf_dir: Path):
    """Our Tokenizer for the folder's tokenizer (fast, or converted from slow files), or None."""
    from lmforge.data.tokenizer import Tokenizer

    # transformers 5 builds an empty tokenizer for a folder without any: look for files first.
    if not any((hf_dir / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    from lmforge.errors import LmforgeError, one_line

    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), use_fast=True,
                                                     trust_remote_code=False)  # fmt: skip
    except Exception as error:  # tokenizers' Rust parser raises bare Exception on a bad file
        raise LmforgeError(
            f"the tokenizer files in {hf_dir} cannot be read ({one_line(error)}); "
            "download them again, or move them out of the folder to convert the weights alone"
        ) from None
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from lmforge.interop.hf.tokenizer import HF_ROLES

    roles = {}
    for attribute, role in HF_ROLES.items():
        token = getattr(hf_tokenizer, attribute, None)
        if token is not None:
            roles[role] = str(token)
    return Tokenizer(backend, roles)


def to_hf(path: Path, out: Path, *, allow_partial: bool = False) -> None:
    """Write the lmforge run or checkpoint `path` as a transformers folder `out`; a fine-tuning run
    as its task model."""
    from lmforge.errors import LmforgeError
    from lmforge.run_dir import read_task_info

    try:
        info = read_task_info(path)
    except LmforgeError:  # a pretraining run or a checkpoint
        _pretrained_to_hf(path, out)
    else:
        _finetuned_to_hf(path, info, out, allow_partial=allow_partial)


def _pretrained_to_hf(path: Path, out: Path) -> None:
    from lmforge.data.framing import framing_for
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.errors import LmforgeError
    from lmforge.interop.hf import save_hf_model_dir
    from lmforge.models.lm import build_model
    from lmforge.models.weights import load_model_weights
    from lmforge.run_dir import read_model_config, resolve_checkpoint, tokenizer_dir

    checkpoint = resolve_checkpoint(path)
    try:
        tokenizer = load_tokenizer(tokenizer_dir(checkpoint))
    except LmforgeError:
        tokenizer = None
        logger.warning("no tokenizer beside %s: the folder will hold the model only", checkpoint)
    model = build_model(read_model_config(checkpoint, tokenizer))
    load_model_weights(checkpoint, model)
    save_hf_model_dir(model.eval(), out)
    if tokenizer is not None:
        cfg = model.config
        framing = framing_for(
            tokenizer, cfg.family, num_segment_types=cfg.embedding.num_segment_types
        )
        _save_tokenizer(tokenizer, framing, cfg, out)


def _finetuned_to_hf(run: Path, info: dict, out: Path, *, allow_partial: bool) -> None:
    """The fine-tuned model: the HF task class for a head model, the seq2seq model itself for
    generative tasks; its tokenizer frames texts as the task does."""
    from lmforge.interop.hf import family_for_config, save_hf_model_dir, write_hf_model_dir
    from lmforge.interop.hf.task_models import build_hf_task_model
    from lmforge.models.lm import LanguageModel
    from lmforge.tasks.finetuned import load_finetuned

    task, model = load_finetuned(run, allow_partial=allow_partial)
    cfg = task.model_config
    if isinstance(model, LanguageModel):  # the task generates: its model is the backbone
        save_hf_model_dir(model, out)
    else:
        labels = info.get("labels") or ["start", "end"]  # QA scores a start and an end
        dropout = getattr(model.head.dropout, "p", None)  # None: a head without dropout
        hf_model = build_hf_task_model(
            cfg, model.state_dict(), _HF_HEADS[info["task"]], labels, dropout=dropout
        )
        write_hf_model_dir(hf_model, family_for_config(cfg), out)
    _save_tokenizer(task.tokenizer, task.framing, cfg, out)


def _save_tokenizer(tokenizer: Tokenizer, framing: Framing, cfg: ModelConfig, out: Path) -> None:
    from lmforge.interop.hf.tokenizer import hf_tokenizer

    hf_tokenizer(tokenizer, framing, max_length=cfg.max_seq_len).save_pretrained(str(out))
