"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer object.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks") replaces each
2-D weight's momentum update by its nearest semi-orthogonal matrix (Newton-Schulz iterations), so
every direction of the matrix moves at the same rate. It suits the matrices that map hidden states
to hidden states; embeddings (a lookup, one row per token), output heads (whose rows are per-class
scores) and vectors (norm gains, biases) keep AdamW, as in modded-nanogpt and Moonlight (Liu et al.
2025, "Muon is Scalable for LLM Training"). Which matrices count as hidden is structural: the 2-D
weights inside a `TransformerBlock` (attention and MLP projections; the fused q/k/v projection is
orthogonalised as one matrix), never an embedding table, even one tied to a head.

`MuonWithAdamW` is what the training step, the lr schedule, the fp16 grad scaler and checkpoints
see: `param_groups` (AdamW's groups, then Muon's), `step`, `zero_grad`, `state_dict`,
`load_state_dict`. Muon is deterministic given the gradient, so after DDP's all-reduce every rank
makes the same update, and its state (one momentum buffer per matrix) resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmforge.layers.block import TransformerBlock


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable 2-D weights inside the transformer blocks of `model`, each once, in
    `model.parameters()` order; embedding tables (and tensors tied to them) are left out."""
    embedding_ids = {
        id(param)
        for module in model.modules()
        if isinstance(module, nn.Embedding)
        for param in module.parameters(recurse=False)
    }
    in_blocks = {
        id(param)
        for module in model.modules()
        if isinstance(module, TransformerBlock)
        for param in module.parameters()
    }
    return [
        param
        for param in model.parameters()
        if param.requires_grad
        and param.ndim == 2
        and id(param) in in_blocks
        and id(param) not in embedding_ids
    ]


class MuonWithAdamW:
    """Steps an AdamW and a Muon optimizer together over disjoint parameters.

    Each group may carry `lr_scale`, its peak rate over the schedule's (`schedules.set_lr`); the
    Muon groups' scales are the configured ones again after `load_state_dict`, so a changed
    `--optim.muon_lr` takes effect on resume, as a changed `--train.lr` does.
    """

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon) -> None:
        self.adamw = adamw
        self.muon = muon
        self._muon_lr_scales = [group.get("lr_scale", 1.0) for group in muon.param_groups]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.adamw.param_groups, *self.muon.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"adamw", "muon"}:
            raise ValueError(
                "it holds the state of a single optimizer (optim.kind=adamw), not Muon with "
                "AdamW; resume with --optim.kind=adamw, or start a new run"
            )
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])
        for group, scale in zip(self.muon.param_groups, self._muon_lr_scales, strict=True):
            group["lr_scale"] = scale
