"""kernels.linear: the oneDNN products equal torch's fp32 products, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lmforge.kernels.linear as linear_module
from lmforge.errors import LmforgeError
from lmforge.kernels.linear import OneDNNLinear, linear, matmul_nt, matmul_tn

HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@pytest.fixture(params=["onednn", "aten"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with fp32 CPU products forced onto oneDNN, then onto torch's own matmul."""
    if request.param == "onednn" and not HAS_ONEDNN:
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(linear_module, "onednn_enabled", lambda: request.param == "onednn")
    return request.param


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # fp32 products of different libraries differ in summation order only.
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (3, 1, 24)])
@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_matches_torch_forward_and_backward(
    backend: str, shape: tuple[int, ...], has_bias: bool
) -> None:
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(40, 24, requires_grad=True)
    bias = torch.randn(40, requires_grad=True) if has_bias else None
    grad = torch.randn(*shape[:-1], 40)
    params = [x, weight] + ([bias] if has_bias else [])

    ours = linear(x, weight, bias)
    ours_grads = torch.autograd.grad(ours, params, grad)
    reference = F.linear(x, weight, bias)
    reference_grads = torch.autograd.grad(reference, params, grad)

    _close(ours, reference)
    for got, expected in zip(ours_grads, reference_grads, strict=True):
        assert got.shape == expected.shape and got.is_contiguous()
        _close(got, expected)


def test_linear_takes_non_contiguous_input(backend: str) -> None:
    x = torch.randn(24, 6).t()  # (6, 24), transposed strides
    weight = torch.randn(10, 24)
    _close(linear(x, weight), F.linear(x, weight))


@pytest.mark.parametrize(("rows", "n", "k"), [(50, 64, 16), (50, 16, 64)])
def test_weight_gradient_product_both_orientations(backend: str, rows: int, n: int, k: int) -> None:
    a, b = torch.randn(rows, n), torch.randn(rows, k)
    _close(matmul_tn(a, b), a.t() @ b)


def test_input_gradient_product_takes_a_transposed_weight(backend: str) -> None:
    grad, weight = torch.randn(50, 64), torch.randn(64, 16)  # dX = dY @ W = matmul_nt(dY, W.T)
    _close(matmul_nt(grad, weight.t()), grad @ weight)


def test_module_is_an_nn_linear_with_the_same_parameters() -> None:
    layer = OneDNNLinear(8, 4)
    assert isinstance(layer, torch.nn.Linear)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    x = torch.randn(3, 8)
    _close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_bf16_autocast_uses_torch_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_module, "onednn_enabled", lambda: True)
    x, weight = torch.randn(4, 8), torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear(x, weight)
    assert out.dtype == torch.bfloat16


def test_unknown_backend_name_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_CPU_MATMUL", "mkl-please")
    linear_module.onednn_enabled.cache_clear()
    try:
        with pytest.raises(LmforgeError, match="LMFORGE_CPU_MATMUL='mkl-please'; use one of"):
            linear_module.onednn_enabled()
    finally:
        monkeypatch.delenv("LMFORGE_CPU_MATMUL")
        linear_module.onednn_enabled.cache_clear()
