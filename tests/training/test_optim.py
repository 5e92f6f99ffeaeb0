"""Weight-decay grouping, fused vs foreach AdamW, gradient clipping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.training.optim import build_optimizer, clip_grad_norm, split_decay_groups


class TinyLM(nn.Module):
    """Embedding, LayerNorm, a Linear with bias and a head tied to the embedding."""

    def __init__(self, vocab_size: int = 11, d_model: int = 8) -> None:
        super().__init__()
        # lm_head is registered before embed on purpose: the tied tensor is then first met as a
        # Linear weight, and must still be classified as an embedding table.
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.lm_head.weight = self.embed.weight
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.proj(self.norm(self.embed(ids))))


def _ids(params: list[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


def test_only_linear_weight_matrices_are_decayed() -> None:
    model = TinyLM()
    decay, no_decay = split_decay_groups(model)
    assert _ids(decay) == {id(model.proj.weight)}
    assert _ids(no_decay) == {
        id(model.embed.weight),
        id(model.norm.weight),
        id(model.norm.bias),
        id(model.proj.bias),
    }


def test_tied_parameter_appears_once() -> None:
    optimizer = build_optimizer(TinyLM(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    all_params = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(all_params) == len(_ids(all_params)) == 5
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_fused_is_default_on_cpu() -> None:
    optimizer = build_optimizer(TinyLM(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert optimizer.defaults["fused"] is True


def _train(fused: bool) -> nn.Module:
    torch.manual_seed(0)
    model = TinyLM()
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), fused=fused)
    ids = torch.randint(0, 11, (4, 6))
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_fused_equals_foreach() -> None:
    fused, foreach = _train(fused=True), _train(fused=False)
    expected = foreach.state_dict()
    for name, tensor in fused.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("max_norm", [None, 0.0, 1e-3])
def test_clip_grad_norm_reports_the_norm_before_clipping(max_norm: float | None) -> None:
    param = nn.Parameter(torch.zeros(4))
    param.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([param], max_norm) == pytest.approx(5.0)
    expected = 5.0 if not max_norm else max_norm
    assert param.grad.norm().item() == pytest.approx(expected, rel=1e-4)


def test_clip_grad_norm_without_grads_is_zero() -> None:
    assert clip_grad_norm([nn.Parameter(torch.zeros(2))], 1.0) == 0.0
