"""The objective interface and the registry of objectives by name."""

from __future__ import annotations

from typing import Protocol

import torch

from lmforge.config.model import ModelConfig
from lmforge.config.schema import ObjectiveSection
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError

DEFAULT_OBJECTIVE = {"decoder": "clm", "encoder": "mlm"}
"""The objective a family trains with when neither objective.kind nor the model type's
`default_objective` names one."""


class Objective(Protocol):
    name: str
    families: tuple[str, ...]
    """Model families this objective can train."""
    is_autoregressive: bool
    """Every token is predicted from its prefix, so the loss is a code length: bits per byte of
    the validation text are reported only then."""
    target_fraction: float
    """Expected share of input positions that carry a label (FLOP accounting of the head)."""

    def raw_length(self, seq_len: int) -> int:
        """Tokens of packed text one example is made from, for inputs of `seq_len` tokens."""
        ...

    def make_batch(
        self, windows: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """(B, T + 1) token windows -> keyword arguments of the model's forward, with `labels`.

        Any randomness (masking) is drawn from `generator`, which the caller seeds.
        """
        ...


def resolve_objective_kind(settings: ObjectiveSection, model: ModelConfig) -> str:
    """objective.kind; when it is not given, the model type's (`model.default_objective`: T5's
    span corruption, BART's denoising), else the family's."""
    return settings.kind or model.default_objective or _family_objective(model.family)


def _family_objective(family: str) -> str:
    if family not in DEFAULT_OBJECTIVE:
        raise LmforgeError(
            f"{family} models have no default objective; add --objective.kind=span_corruption "
            "(T5) or --objective.kind=bart_denoising (BART), or set model.default_objective"
        )
    return DEFAULT_OBJECTIVE[family]


def build_objective(
    settings: ObjectiveSection, *, family: str, tokenizer: Tokenizer, source: str
) -> Objective:
    """The objective of `settings` for a `family` model; `source` names the tokenizer in errors.
    settings.kind None: the family's objective (resolve a model type's own with
    `resolve_objective_kind` first)."""
    from lmforge.objectives.clm import CausalLM
    from lmforge.objectives.denoising import BartDenoising
    from lmforge.objectives.mlm import MaskedLM
    from lmforge.objectives.span_corruption import SpanCorruption

    kind = settings.kind or _family_objective(family)
    classes = {"clm": CausalLM, "mlm": MaskedLM, "span_corruption": SpanCorruption,
               "bart_denoising": BartDenoising}  # fmt: skip
    families = classes[kind].families
    if family not in families:
        raise LmforgeError(
            f"objective {kind} cannot train {family} models; it supports {', '.join(families)}"
        )
    if kind == "mlm":
        return MaskedLM(settings, tokenizer, source)
    if kind == "span_corruption":
        return SpanCorruption(
            tokenizer,
            source,
            noise_density=settings.noise_density,
            mean_noise_span_length=settings.mean_noise_span_length,
            full_target=settings.span_target == "full",
        )
    if kind == "bart_denoising":
        return BartDenoising(
            tokenizer,
            source,
            text_infilling=settings.text_infilling,
            sentence_permutation=settings.sentence_permutation,
            mask_ratio=settings.infilling_rate,
            poisson_lambda=settings.poisson_lambda,
        )
    return CausalLM()
