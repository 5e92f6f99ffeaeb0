"""Hugging Face `transformers` interop: the family registry and reading/writing HF model folders.

Families are looked up by HF `model_type` (config.json). Each family module (gpt2.py, bloom.py)
describes its checkpoint layout as data; `convert.py` applies it. `transformers` is optional and
imported only where a function needs it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

import torch

from lmforge.config.model import ModelConfig
from lmforge.errors import LmforgeError, one_line
from lmforge.interop.hf.convert import (
    extra_keys,
    hf_state_dict_to_ours,
    mismatched_fields,
    ours_to_hf_state_dict,
)

logger = logging.getLogger(__name__)

FAMILIES: dict[str, str] = {
    "gpt2": "lmforge.interop.hf.gpt2",
    "bloom": "lmforge.interop.hf.bloom",
    "llama": "lmforge.interop.hf.llama",
    "bert": "lmforge.interop.hf.bert",
    "roberta": "lmforge.interop.hf.roberta",
    "t5": "lmforge.interop.hf.t5",
    "bart": "lmforge.interop.hf.bart",
}
"""HF model_type -> the module describing it."""

EXTRA_WEIGHTS_FILE = "lmforge_extra.safetensors"
"""Weights our model has and the HF model class has not (RoBERTa's pooler), kept beside the HF
weights so that an exported folder converts back bit for bit; transformers never reads this file."""


def get_family(model_type: str) -> ModuleType:
    """The family module for an HF `model_type`; an error lists the supported ones."""
    if model_type not in FAMILIES:
        raise LmforgeError(
            f"HF model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)}"
        )
    return importlib.import_module(FAMILIES[model_type])


def family_for_config(cfg: ModelConfig) -> ModuleType:
    """The family whose checkpoints can represent `cfg`; the error says what each one lacks."""
    reasons = []
    for model_type in FAMILIES:
        family = get_family(model_type)
        wrong = mismatched_fields(cfg, family.REQUIRED, model_type)
        if not wrong:
            return family
        reasons.append(f"{model_type}: {', '.join(wrong)}")
    raise LmforgeError(f"no HF architecture fits this model ({'; '.join(reasons)})")


_PICKLE_WEIGHTS = "pytorch_model.bin"

# Rewrites a pickle as safetensors (clone: safetensors refuses tied tensors sharing storage).
_TO_SAFETENSORS = (
    'python -c "import torch; from safetensors.torch import save_file; '
    "sd = torch.load('pytorch_model.bin', weights_only=True); "
    "save_file({k: v.clone() for k, v in sd.items()}, 'model.safetensors', {'format': 'pt'})\""
)


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise LmforgeError(f"{file} is missing; download the model folder again")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LmforgeError(
            f"{file} is truncated or corrupt ({one_line(error)}); download it again"
        ) from None


def _shard_names(index: Path) -> list[str]:
    """The weight files an HF index (model.safetensors.index.json) names, sorted."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted({str(name) for name in weight_map.values()})
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise LmforgeError(
            f"{index} is not a valid weight index ({one_line(error)}); download it again"
        ) from None


def _read_weight_files(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF folder's model.safetensors, sharded or not.

    Pickled weights (pytorch_model.bin) are refused, not read: unpickling a downloaded file can
    run code, and even torch's restricted loader is an attack surface we do not need."""
    if (path / "model.safetensors").is_file():
        return _load_safetensors(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return {
            k: v for name in _shard_names(index) for k, v in _load_safetensors(path / name).items()
        }
    if (path / _PICKLE_WEIGHTS).is_file() or (path / f"{_PICKLE_WEIGHTS}.index.json").is_file():
        raise LmforgeError(
            f"{path} holds only pickled weights ({_PICKLE_WEIGHTS}), which lmforge never loads "
            f"(unpickling can run code); if you trust the file, convert it inside {path} with "
            f"{_TO_SAFETENSORS} (or load it in transformers and save_pretrained again)"
        )
    raise LmforgeError(
        f"{path} has no model.safetensors (nor model.safetensors.index.json with its shards)"
    )


def _read_hf_config(path: Path) -> tuple[str, object]:
    """(model_type, transformers config) of an HF folder's config.json, checked."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LmforgeError(f"{path} is not a Hugging Face model folder: config.json is missing")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # UnicodeDecodeError and JSONDecodeError included
        raise LmforgeError(f"{config_file} is not valid JSON ({one_line(error)})") from None
    if not isinstance(raw, dict):
        raise LmforgeError(f"{config_file} must hold a JSON object, not {type(raw).__name__}")
    model_type = raw.get("model_type", "<none>")
    get_family(str(model_type))
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    except Exception as error:  # transformers and huggingface_hub raise many types for bad fields
        raise LmforgeError(
            f"{config_file} is not a valid {model_type} config ({one_line(error)})"
        ) from None
    return str(model_type), hf_config


def load_hf_model_dir(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a saved HF folder (config.json + safetensors weights) into our config and state dict.

    Only local files are read and no remote code runs.
    """
    path = Path(path)
    model_type, hf_config = _read_hf_config(path)
    family = get_family(model_type)
    cfg = family.config_from_hf(hf_config)
    hf_sd = _read_weight_files(path)
    if (path / EXTRA_WEIGHTS_FILE).is_file():
        hf_sd.update(_load_safetensors(path / EXTRA_WEIGHTS_FILE))
    # Checkpoints saved from the bare body model (no LM head) lack the body prefix.
    prefix, head = family.BASE_PREFIX, getattr(family, "HEAD_PREFIXES", ("lm_head.",))
    if not any(key.startswith(prefix) for key in hf_sd):
        hf_sd = {k if k.startswith(head) else prefix + k: v for k, v in hf_sd.items()}
    # A bare body (BertModel, e.g. a sentence-transformers encoder) has no pretraining head: ours
    # starts fresh. Fine-tuning never reads it; fill-mask output would be noise.
    fresh = head if not any(key.startswith(head) for key in hf_sd) else ()
    if fresh:
        logger.warning(
            "%s holds a bare %s body without its pretraining head (%s*): the head is initialised "
            "fresh; fine-tuning does not use it",
            path,
            model_type,
            "/".join(head),
        )
    return cfg, hf_state_dict_to_ours(family, hf_sd, cfg, fresh_prefixes=fresh)


def build_hf_model(cfg: ModelConfig, state_dict: dict[str, torch.Tensor] | None = None):
    """The HF model (eval mode) for our `cfg`, holding `state_dict` (ours) if given."""
    return _build_hf_model(cfg, state_dict)[0]


def _build_hf_model(
    cfg: ModelConfig, state_dict: dict[str, torch.Tensor] | None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The HF model and the HF-named weights it has no place for (`HF_EXTRA_KEYS`)."""
    family = family_for_config(cfg)
    model = family.hf_model_class()(family.config_to_hf(cfg))
    prepare = getattr(family, "prepare_hf_model", None)
    if prepare is not None:
        prepare(model, cfg)
    extra: dict[str, torch.Tensor] = {}
    if state_dict is not None:
        hf_sd = ours_to_hf_state_dict(family, state_dict, cfg)
        extra = {k: hf_sd.pop(k) for k in extra_keys(family) if k in hf_sd}
        model.load_state_dict(hf_sd, strict=True)
    return model.eval(), extra


def save_hf_model_dir(model: torch.nn.Module, out_dir: str | os.PathLike[str]) -> None:
    """Write our `model` as an HF folder (config.json + model.safetensors) via `save_pretrained`.

    The config carries the model's special token ids (`model.config.tokens`: bos/eos/pad and, for
    seq2seq, the decoder start id).
    """
    hf_model, extra = _build_hf_model(model.config, model.state_dict())
    write_hf_model_dir(hf_model, family_for_config(model.config), out_dir, extra=extra)


def write_hf_model_dir(
    hf_model: torch.nn.Module,
    family: ModuleType,
    out_dir: str | os.PathLike[str],
    *,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """`hf_model.save_pretrained(out_dir)`, `extra` weights beside it (`EXTRA_WEIGHTS_FILE`) and
    the family's config.json fix. The folder is written beside `out_dir` and renamed into place,
    so an interrupted export never leaves something that looks complete."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise LmforgeError(f"{out_dir} already exists; choose a new output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        hf_model.save_pretrained(staging)
        if extra:
            from safetensors.torch import save_file

            save_file(extra, staging / EXTRA_WEIGHTS_FILE, metadata={"format": "pt"})
        fix_config = getattr(family, "fix_saved_config", None)
        if fix_config is not None:
            config_file = staging / "config.json"
            config_file.write_text(
                json.dumps(fix_config(json.loads(config_file.read_text())), indent=2) + "\n"
            )
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
