"""kernels.attention: the CPU matmul path computes what SDPA computes, with every mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lmforge.kernels.attention as kernels
from lmforge.kernels.attention import attend
from lmforge.layers.masks import AttentionMask, build_attention_mask


def _inputs(B: int = 2, H: int = 3, T: int = 6, S: int = 6, Dh: int = 8):
    q = torch.randn(B, H, T, Dh, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, H, S, Dh, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, H, S, Dh, dtype=torch.bfloat16, requires_grad=True)
    return q, k, v


def _attend(q, k, v, *, mask: AttentionMask, scale: float, dropout_p: float) -> torch.Tensor:
    """`attend` with SDPA's mask arguments taken from an AttentionMask, as attention passes them."""
    return attend(
        q, k, v, attn_mask=mask.mask, is_causal=mask.is_causal, scale=scale, dropout_p=dropout_p
    )


def _reference(q, k, v, mask: AttentionMask, scale: float) -> torch.Tensor:
    """SDPA's math, in fp32, on the same bf16 inputs."""
    attn_mask = None if mask.mask is None else mask.mask.float()
    return F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=attn_mask, is_causal=mask.is_causal, scale=scale
    )


def _masks(T: int, S: int) -> dict[str, AttentionMask]:
    padding = torch.ones(2, S, dtype=torch.bool)
    padding[1, :2] = False  # left padding of the second row
    slopes = torch.tensor([0.5, 0.25, 0.125])[None, :, None, None]
    alibi = slopes * (torch.arange(S) - torch.arange(S - T, S)[:, None])[None, None]
    common = dict(query_len=T, key_len=S, dtype=torch.bfloat16, device=torch.device("cpu"))
    return {
        "none": AttentionMask(None, False),
        "causal": AttentionMask(None, True) if T == S else build_attention_mask(
            is_causal=True, key_padding=None, score_bias=None, **common),
        "causal+padding": build_attention_mask(
            is_causal=True, key_padding=padding, score_bias=None, **common),
        "padding+bias": build_attention_mask(
            is_causal=False, key_padding=padding, score_bias=alibi, **common),
    }  # fmt: skip


@pytest.mark.parametrize(("T", "S"), [(6, 6), (3, 6)])
@pytest.mark.parametrize("kind", ["none", "causal", "causal+padding", "padding+bias"])
def test_matmul_path_matches_sdpa_forward_and_backward(T: int, S: int, kind: str) -> None:
    assert kernels._uses_matmul_attention(*_inputs(T=T, S=S)[:2])
    q, k, v = _inputs(T=T, S=S)
    mask = _masks(T, S)[kind]
    grad = torch.randn(2, 3, T, 8)
    if mask.mask is not None:
        # Queries that may attend nothing (left padding under the causal rule) carry no loss in a
        # model; their uniform "attention" is a convention of the finite mask, not a result.
        attends_something = (mask.mask > torch.finfo(torch.bfloat16).min).any(-1, keepdim=True)
        grad = grad * attends_something

    ours = _attend(q, k, v, mask=mask, scale=8**-0.5, dropout_p=0.0)
    ours_grads = torch.autograd.grad(ours, (q, k, v), grad.bfloat16())
    reference = _reference(q, k, v, mask, 8**-0.5)
    reference_grads = torch.autograd.grad(reference, (q, k, v), grad)

    assert ours.dtype == torch.bfloat16
    # bf16 scores and probabilities: agreement to bf16 resolution (2^-8 relative).
    torch.testing.assert_close(ours.float(), reference, rtol=0.03, atol=0.03)
    for got, expected in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.05)


def test_fp32_long_sequences_and_single_queries_go_to_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, _ = _inputs(T=6, S=6)
    assert not kernels._uses_matmul_attention(q.float(), k.float())
    assert not kernels._uses_matmul_attention(q[:, :, :1], k)  # one query: cached decoding
    monkeypatch.setattr(kernels, "MATMUL_ATTENTION_MAX_SCORES", 2 * 3 * 6 * 6 - 1)
    assert not kernels._uses_matmul_attention(q, k)


def test_sdpa_path_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = _inputs()
    mask = _masks(6, 6)["causal+padding"]
    matmul_path = _attend(q, k, v, mask=mask, scale=0.3, dropout_p=0.0)
    monkeypatch.setattr(kernels, "MATMUL_ATTENTION_MAX_SCORES", 0)
    sdpa_path = _attend(q, k, v, mask=mask, scale=0.3, dropout_p=0.0)
    torch.testing.assert_close(matmul_path.float(), sdpa_path.float(), rtol=0.03, atol=0.03)


def test_dropout_applies_in_the_matmul_path() -> None:
    q, k, v = _inputs()
    mask = AttentionMask(None, True)
    plain = _attend(q, k, v, mask=mask, scale=0.3, dropout_p=0.0)
    dropped = _attend(q, k, v, mask=mask, scale=0.3, dropout_p=0.5)
    assert not torch.equal(plain, dropped)
