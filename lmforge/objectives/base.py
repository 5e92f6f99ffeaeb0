"""The objective interface and the registry of objectives by name."""

from __future__ import annotations

from typing import Protocol

import torch

from lmforge.errors import LmforgeError


class Objective(Protocol):
    name: str
    families: tuple[str, ...]
    """Model families this objective can train."""

    def make_batch(self, windows: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T + 1) token windows -> keyword arguments of the model's forward, with `labels`."""
        ...


def build_objective(kind: str, *, family: str) -> Objective:
    from lmforge.objectives.clm import CausalLM

    objectives: dict[str, type] = {"clm": CausalLM}
    objective = objectives[kind]()
    if family not in objective.families:
        raise LmforgeError(
            f"objective {kind} cannot train a {family} model; "
            f"it supports {', '.join(objective.families)}"
        )
    return objective
