"""kernels.unpadding: padded batches run on their real tokens only, with the same results."""

from __future__ import annotations

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.kernels import unpadding
from lmforge.kernels.unpadding import Unpadded
from lmforge.models.lm import build_model


def _mask(lengths: list[int], length: int) -> torch.Tensor:
    return (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()


def test_unpad_keeps_the_real_rows_in_order_and_pad_puts_them_back_with_zeros() -> None:
    mask = _mask([3, 1, 4], 4)
    layout = Unpadded.of(mask)
    assert layout is not None
    x = torch.arange(3 * 4 * 2, dtype=torch.float32).view(3, 4, 2)
    rows = layout.unpad(x)
    assert torch.equal(rows, x[mask.bool()])
    assert torch.equal(layout.pad(rows), x * mask[..., None])


def test_padding_is_kept_where_too_little_of_the_batch_is_padding() -> None:
    assert Unpadded.of(torch.ones(4, 8, dtype=torch.long)) is None
    almost_full = _mask([20] * 9 + [19], 20)  # 0.5% padding
    assert Unpadded.of(almost_full) is None
    assert Unpadded.of(almost_full, min_padding=0.0) is not None
    assert Unpadded.of(_mask([64, 30, 20, 12], 64)) is not None  # fine-tuning batches: ~half pads


def _hidden_and_grads(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor):
    model.zero_grad()
    hidden = model.hidden_states(ids, attention_mask=mask)
    (hidden * mask[..., None]).square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return hidden, grads


@pytest.mark.parametrize("preset", ["bert-tiny", "gpt2-tiny", "bloom-tiny", "t5-tiny", "bart-tiny"])
def test_removing_padding_changes_no_real_token_and_no_gradient(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).train()
    ids = torch.randint(5, 300, (4, 24))
    mask = _mask([24, 10, 3, 17], 24)
    monkeypatch.setattr(unpadding, "MIN_PADDING_FRACTION", 2.0)  # never
    padded, padded_grads = _hidden_and_grads(model, ids, mask)
    monkeypatch.setattr(unpadding, "MIN_PADDING_FRACTION", 0.0)  # always
    removed, removed_grads = _hidden_and_grads(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(removed[real], padded[real], rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(removed[~real]) == 0
    assert padded_grads.keys() == removed_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(removed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
