"""The generic engine that converts state dicts between lmforge and Hugging Face `transformers`.

A family module (gpt2.py, bloom.py, ...) describes one HF architecture as data:

- `KEY_MAP`: our parameter name -> theirs, with `{i}` standing for the layer index; a tuple of HF
  names means our tensor is their tensors concatenated along dim 0 (BERT's query, key and value
  -> our fused `qkv_proj`), split back into equal parts on export. A family whose names depend
  on the config (T5's gated MLP has wi_0/wi_1, the dense one wi) defines `key_map(cfg)` instead;
- `TRANSFORMS`: our parameter name -> a named `Transform` for tensors whose layout differs
  (GPT-2's Conv1D stores (in, out); BLOOM interleaves q, k, v per head);
- `TIED_HF_KEY`: the HF name of the output matrix, present in HF state dicts even when it is tied
  to the word embeddings (we store it once, as `token_embed.weight`);
- `IGNORED_HF_KEYS`: regular expressions for HF entries that carry no weights (old causal-mask
  buffers) or that our models do not have (BERT's pooler and next-sentence head);
- `ALIASES`: HF name -> the HF name it is always a copy of (T5's and BART's per-stack
  `embed_tokens`, BERT's `decoder.bias`): checked equal on import, written on export;
- `OPTIONAL_HF_KEYS`: HF names of our weights that HF checkpoints may lack (the pooler: BertModel
  checkpoints have one, BertForMaskedLM ones not). Absent on import, they are initialised as our
  `init_weights` would (N(0, init_std) matrices, zero vectors);
- `HF_EXTRA_KEYS`: those of them the exported HF model class has no place for (RoBERTa's pooler),
  written beside the HF weights (see `interop.hf.save_hf_model_dir`), not into the HF model;
- `FALLBACKS`: HF name -> the HF name whose tensor stands in when it is absent (transformers 5 saves
  a T5 v1.1 head that it tied at construction as `shared.weight` only);
- `config_from_hf`, `config_to_hf`, `hf_model_class()`; the special token ids travel through
  `token_ids_from_hf` / `token_ids_to_hf`, the same for every family.

This engine applies such a description in both directions and checks it against the parameters our
model expects (built on the meta device: shapes only, no memory). Every unmapped, missing and
mis-shaped key is collected and reported in one `LmforgeError`, so a bad checkpoint shows all of its
problems at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from lmforge.config.model import ModelConfig, TokenIdsConfig
from lmforge.errors import LmforgeError
from lmforge.models.lm import build_model

_EMBEDDING_KEY = "token_embed.weight"


@dataclass(frozen=True)
class Transform:
    """A named layout change, with its inverse; both take the tensor and our model config."""

    name: str
    to_ours: Callable[[torch.Tensor, ModelConfig], torch.Tensor]
    to_hf: Callable[[torch.Tensor, ModelConfig], torch.Tensor]


def _transpose(tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    return tensor.t()


# Conv1D (GPT-2) keeps weights as (in, out), nn.Linear as (out, in); transposing is self-inverse.
TRANSPOSE = Transform("transpose", _transpose, _transpose)


def mismatched_fields(
    cfg: ModelConfig, required: Mapping[str, object], architecture: str
) -> list[str]:
    """Each dotted field of `cfg` that differs from `required`, as "model.x=value (... needs y)"."""
    wrong = []
    for path, needed in required.items():
        value: object = cfg
        for part in path.split("."):
            value = getattr(value, part)
        if value != needed:
            wrong.append(f"model.{path}={value!r} ({architecture} needs {needed!r})")
    return wrong


def require_fields(cfg: ModelConfig, required: Mapping[str, object], architecture: str) -> None:
    """Raise one `LmforgeError` naming every dotted field of `cfg` that differs from `required`."""
    wrong = mismatched_fields(cfg, required, architecture)
    if wrong:
        raise LmforgeError(f"this model cannot be exported as {architecture}: {', '.join(wrong)}")


_HF_TOKEN_IDS = {"pad_id": "pad_token_id", "bos_id": "bos_token_id", "eos_id": "eos_token_id",
                 "decoder_start_id": "decoder_start_token_id"}  # fmt: skip
"""Our special token ids -> the HF config attributes that hold them (every family)."""


def token_ids_from_hf(hf_config: Any) -> TokenIdsConfig:
    """The special ids an HF config names. An id that is not one token of the vocabulary is
    dropped: GPT-2's config says 50256 whatever the vocabulary size, newer configs list several
    eos ids. The decoder start is read for encoder-decoders only."""
    ids = {}
    for ours, theirs in _HF_TOKEN_IDS.items():
        value = getattr(hf_config, theirs, None)
        valid = isinstance(value, int) and 0 <= value < hf_config.vocab_size
        ids[ours] = value if valid else None
    if not getattr(hf_config, "is_encoder_decoder", False):
        ids["decoder_start_id"] = None
    return TokenIdsConfig(**ids)


def token_ids_to_hf(cfg: ModelConfig) -> dict[str, int | None]:
    """HF config keyword arguments for `cfg.tokens` (decoder_start_token_id for encoder-decoders
    only); unknown ids stay None rather than taking the HF class's defaults."""
    kwargs = {theirs: getattr(cfg.tokens, ours) for ours, theirs in _HF_TOKEN_IDS.items()}
    if cfg.family != "encoder_decoder":
        del kwargs["decoder_start_token_id"]
    return kwargs


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for `cfg`, from a model on the meta device (no memory)."""
    model = build_model(cfg, device="meta")
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _pattern(our_template: str) -> re.Pattern[str]:
    return re.compile(re.escape(our_template).replace(r"\{i\}", r"(\d+)") + "$")


def family_key_map(family: ModuleType, cfg: ModelConfig) -> Mapping[str, str | tuple[str, ...]]:
    """The family's key map for `cfg`: `key_map(cfg)` where defined, else `KEY_MAP`."""
    build = getattr(family, "key_map", None)
    return build(cfg) if build is not None else family.KEY_MAP


def _lookup(
    family: ModuleType, our_key: str, cfg: ModelConfig
) -> tuple[tuple[str, ...], Transform | None] | None:
    """The HF key(s) and transform for one of our keys, or None when the family map lacks it."""
    for template, hf_templates in family_key_map(family, cfg).items():
        match = _pattern(template).match(our_key)
        if match:
            layer = match.group(1) if match.groups() else None
            if isinstance(hf_templates, str):
                hf_templates = (hf_templates,)
            hf_keys = tuple(t if layer is None else t.replace("{i}", layer) for t in hf_templates)
            return hf_keys, family.TRANSFORMS.get(template)
    return None


def _aliases(family: ModuleType) -> Mapping[str, str]:
    return getattr(family, "ALIASES", {})


def _apply(
    transform: Transform | None, direction: str, tensor: torch.Tensor, cfg: ModelConfig
) -> torch.Tensor | None:
    """`tensor` through one direction of `transform`; None when its shape does not fit it."""
    if transform is None:
        return tensor
    try:
        return getattr(transform, direction)(tensor, cfg)
    except RuntimeError:  # a view/reshape that does not fit: reported as mis-shaped
        return None


def extra_keys(family: ModuleType) -> tuple[str, ...]:
    """HF names of our weights that the family's HF model class lacks (`HF_EXTRA_KEYS`)."""
    return getattr(family, "HF_EXTRA_KEYS", ())


def optional_keys(family: ModuleType) -> tuple[str, ...]:
    """HF names of our weights that HF checkpoints may lack (`OPTIONAL_HF_KEYS`)."""
    return getattr(family, "OPTIONAL_HF_KEYS", ())


def _fresh(shape: tuple[int, ...], cfg: ModelConfig) -> torch.Tensor:
    """A newly initialised weight, as `init_weights` makes Linear layers: N(0, std) or zeros."""
    if len(shape) >= 2:
        return torch.randn(shape) * cfg.init_std
    return torch.zeros(shape)


def _is_ignored(family: ModuleType, hf_key: str) -> bool:
    return any(re.fullmatch(pattern, hf_key) for pattern in family.IGNORED_HF_KEYS)


def _raise_problems(direction: str, problems: dict[str, list[str]]) -> None:
    parts = [f"{kind} ({len(keys)}): {', '.join(keys)}" for kind, keys in problems.items() if keys]
    if parts:
        raise LmforgeError(
            f"cannot convert {direction}: " + "; ".join(parts) + ". Check that the checkpoint "
            "matches its config.json (model_type, sizes, tie_word_embeddings)."
        )


def hf_state_dict_to_ours(
    family: ModuleType,
    hf_sd: Mapping[str, torch.Tensor],
    our_cfg: ModelConfig,
    *,
    fresh_prefixes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Map an HF state dict of `family` onto our parameter names and layouts.

    HF keys starting with one of `fresh_prefixes` may be absent (a bare body checkpoint has no
    pretraining head): our weights they map to are initialised as `init_weights` makes them.
    Raises `LmforgeError` listing every missing, mis-shaped and unmapped key.
    """
    problems: dict[str, list[str]] = {"missing": [], "mis-shaped": [], "unmapped": []}
    fresh: list[str] = []
    fallbacks = getattr(family, "FALLBACKS", {})
    hf_sd = {**{k: hf_sd[v] for k, v in fallbacks.items() if v in hf_sd}, **hf_sd}
    used: set[str] = set(fallbacks)
    ours: dict[str, torch.Tensor] = {}
    for our_key, shape in expected_shapes(our_cfg).items():
        entry = _lookup(family, our_key, our_cfg)
        if entry is None:
            problems["unmapped"].append(f"{our_key} (no HF name in {family.__name__})")
            continue
        hf_keys, transform = entry
        absent = [k for k in hf_keys if k not in hf_sd]
        if absent and set(absent) <= set(optional_keys(family)):
            ours[our_key] = _fresh(shape, our_cfg)
            continue
        if absent and fresh_prefixes and all(k.startswith(fresh_prefixes) for k in absent):
            fresh.append(our_key)
            continue
        if absent:
            problems["missing"].extend(absent)
            continue
        used.update(hf_keys)
        parts = [hf_sd[k] for k in hf_keys]
        try:
            tensor = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        except RuntimeError:  # parts whose trailing dims disagree
            tensor = None
        if tensor is not None:
            tensor = _apply(transform, "to_ours", tensor, our_cfg)
        if tensor is None or tuple(tensor.shape) != shape:
            got = " + ".join(f"{k} {tuple(hf_sd[k].shape)}" for k in hf_keys)
            problems["mis-shaped"].append(f"{got} -> {our_key} expects {shape}")
            continue
        ours[our_key] = tensor.contiguous()
    tied = family.TIED_HF_KEY
    if our_cfg.tie_word_embeddings and tied in hf_sd and _EMBEDDING_KEY in ours:
        used.add(tied)
        # A "tied" checkpoint whose head differs from its embeddings is not tied: refuse to guess.
        if not torch.equal(hf_sd[tied], hf_sd[family_key_map(family, our_cfg)[_EMBEDDING_KEY]]):
            problems["mis-shaped"].append(
                f"{tied} differs from the word embeddings although tie_word_embeddings is true"
            )
    for alias, source in _aliases(family).items():
        if alias in hf_sd and source in hf_sd:
            used.add(alias)
            if not torch.equal(hf_sd[alias], hf_sd[source]):
                problems["mis-shaped"].append(f"{alias} differs from {source}, its tied copy")
    # Optional keys our model lacks (a build without a pooler) are skipped like ignored ones.
    skip = set(optional_keys(family))
    leftovers = [k for k in hf_sd if k not in used | skip and not _is_ignored(family, k)]
    problems["unmapped"].extend(leftovers)
    _raise_problems(f"from HF {family.MODEL_TYPE}", problems)
    if fresh:
        initialised = build_model(our_cfg).state_dict()
        ours.update({key: initialised[key] for key in fresh})
    return ours


def ours_to_hf_state_dict(
    family: ModuleType, our_sd: Mapping[str, torch.Tensor], our_cfg: ModelConfig
) -> dict[str, torch.Tensor]:
    """Map our state dict onto the HF names and layouts of `family`.

    With tied embeddings the HF output matrix (`TIED_HF_KEY`) is emitted as the embedding tensor, as
    HF's own `state_dict()` lists it. Raises `LmforgeError` on missing, mis-shaped, unmapped keys.
    """
    problems: dict[str, list[str]] = {"missing": [], "mis-shaped": [], "unmapped": []}
    shapes = expected_shapes(our_cfg)
    hf_sd: dict[str, torch.Tensor] = {}
    for our_key, shape in shapes.items():
        entry = _lookup(family, our_key, our_cfg)
        if entry is None:
            problems["unmapped"].append(f"{our_key} (no HF name in {family.__name__})")
        elif our_key not in our_sd:
            problems["missing"].append(our_key)
        elif tuple(our_sd[our_key].shape) != shape:
            problems["mis-shaped"].append(
                f"{our_key} {tuple(our_sd[our_key].shape)}, expected {shape}"
            )
        else:
            hf_keys, transform = entry
            # Shapes were checked above, so the transform fits.
            tensor = _apply(transform, "to_hf", our_sd[our_key], our_cfg)
            for hf_key, part in zip(hf_keys, tensor.chunk(len(hf_keys), 0), strict=True):
                hf_sd[hf_key] = part.contiguous()
    problems["unmapped"].extend(k for k in our_sd if k not in shapes)
    _raise_problems(f"to HF {family.MODEL_TYPE}", problems)
    if our_cfg.tie_word_embeddings:
        hf_sd[family.TIED_HF_KEY] = hf_sd[family_key_map(family, our_cfg)[_EMBEDDING_KEY]]
    for alias, source in _aliases(family).items():
        hf_sd[alias] = hf_sd[source]
    return hf_sd
