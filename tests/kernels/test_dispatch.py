"""kernels.dispatch: every CPU-specific path steps aside off the CPU by one rule, decided from the
device type. No GPU is needed: tensors and models on `meta` (or a mocked device) stand in for
CUDA, and the tests check which op each path would call."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lmforge.kernels as kernels
import lmforge.kernels.attention as attention
import lmforge.kernels.linear as linear_module
from lmforge.config.presets import get_preset
from lmforge.kernels import apply_cpu_kernels
from lmforge.kernels.allocator import keep_freed_memory
from lmforge.kernels.dispatch import cpu_kernels_apply, should_compile
from lmforge.kernels.linear import OneDNNLinear
from lmforge.kernels.unpadding import Unpadded
from lmforge.models.lm import build_model

HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@pytest.fixture
def onednn_policy(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Force the oneDNN policy on, so only the device rule can turn the CPU path off."""
    if not HAS_ONEDNN:
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setenv("LMFORGE_CPU_MATMUL", "onednn")
    linear_module.onednn_enabled.cache_clear()
    yield
    linear_module.onednn_enabled.cache_clear()


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", True), ("cuda", False), ("cuda:1", False), ("meta", False), ("mps", False)],
)
def test_the_rule_is_the_device_type(device: str, expected: bool) -> None:
    assert cpu_kernels_apply(device) is expected
    assert cpu_kernels_apply(torch.device(device)) is expected


@pytest.mark.usefixtures("onednn_policy")
def test_onednn_linears_step_aside_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    x, weight = torch.randn(4, 8), torch.randn(16, 8)
    assert linear_module._uses_onednn(x, weight)
    assert not linear_module._uses_onednn(x.to("meta"), weight.to("meta"))

    def no_onednn(*args):  # noqa: ANN002, ANN202
        raise AssertionError("oneDNN called for a non-CPU tensor")

    monkeypatch.setattr(linear_module, "_onednn_nt", no_onednn)
    layer = OneDNNLinear(8, 16, device="meta")
    assert layer(torch.empty(2, 3, 8, device="meta", requires_grad=True)).shape == (2, 3, 16)


@pytest.mark.usefixtures("onednn_policy")
def test_apply_cpu_kernels_leaves_a_gpu_model_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    def types(model: nn.Module) -> set[type]:
        return {type(m) for m in model.modules() if isinstance(m, nn.Linear)}

    assert types(apply_cpu_kernels(nn.Sequential(nn.Linear(4, 4)))) == {OneDNNLinear}
    # A model on meta is not placed yet: swapped, and its forward decides per input (above).
    assert types(apply_cpu_kernels(nn.Sequential(nn.Linear(4, 4, device="meta")))) == {OneDNNLinear}
    monkeypatch.setattr(kernels, "_model_device", lambda model: torch.device("cuda", 0))
    assert types(apply_cpu_kernels(nn.Sequential(nn.Linear(4, 4)))) == {nn.Linear}


def test_matmul_attention_is_for_cpu_bf16_only() -> None:
    q = torch.empty(2, 4, 64, 16, dtype=torch.bfloat16)
    assert attention._uses_matmul_attention(q, q)
    assert not attention._uses_matmul_attention(q.to("meta"), q.to("meta"))
    assert not attention._uses_matmul_attention(q.float(), q.float())


def test_padding_removal_steps_aside_off_the_cpu() -> None:
    mask = torch.ones(4, 8, dtype=torch.long)
    mask[:, 4:] = 0  # half padding: removed on the CPU
    assert Unpadded.of(mask) is not None
    assert Unpadded.of(mask.to("meta")) is None


def test_allocator_policy_steps_aside_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*args):  # noqa: ANN002, ANN202
        raise AssertionError("the C library was touched for a GPU process")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert keep_freed_memory.__wrapped__("cuda") is False
    assert keep_freed_memory.__wrapped__(torch.device("cuda", 1)) is False


def _record_sdpa(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append({"mask": kwargs.get("attn_mask"), "is_causal": kwargs.get("is_causal")})
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", recording)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_decoder_off_the_cpu_runs_sdpa_with_is_causal_and_no_mask(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """Packed pretraining batches (no padding, so no attention_mask): SDPA's own causal path, which
    its flash kernel takes, not a materialised (T, S) mask, in both precisions."""
    calls = _record_sdpa(monkeypatch)
    model = build_model(get_preset("gpt2-tiny"), device="meta").to(dtype).train()
    model(input_ids=torch.zeros(2, 32, dtype=torch.long, device="meta"))
    layers = get_preset("gpt2-tiny").num_layers
    assert calls == [{"mask": None, "is_causal": True}] * layers


def test_padded_batches_off_the_cpu_keep_the_padded_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU half a batch of padding is removed; off it the blocks see (B, T, D) and SDPA one
    additive mask (there is no nonzero() on meta, so removal would fail here)."""
    calls = _record_sdpa(monkeypatch)
    model = build_model(get_preset("bert-tiny"), device="meta").train()
    ids = torch.zeros(2, 32, dtype=torch.long, device="meta")
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert all(call["mask"] is not None and not call["is_causal"] for call in calls)


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [("auto", "cuda", True), ("auto", "cpu", False), (True, "cpu", True), (False, "cuda", False)],
)
def test_compile_auto_means_on_for_cuda_off_for_cpu(setting, device: str, expected: bool) -> None:  # noqa: ANN001
    assert should_compile(setting, device) is expected
