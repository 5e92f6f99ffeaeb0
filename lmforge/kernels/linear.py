"""Linear layers and matrix products whose fp32 CPU GEMMs run on the faster of MKL and oneDNN.

PyTorch's CPU builds send fp32 matmuls to MKL, which dispatches its AVX-512 kernels on Intel CPUs
only: on AMD Zen 4/5 it runs AVX2 kernels at about half the machine's fp32 rate. oneDNN, in every
x86 build of torch (it already runs the bf16 matmuls), uses AVX-512 on both vendors. Measured on a
2-core AMD EPYC (Zen 5), torch 2.13, fp32, (2048 x 512) @ (512 x 2048): MKL 215 GFLOP/s, oneDNN
500 GFLOP/s (docs/benchmarks.md). On such CPUs every fp32 product of a training step (forward,
input gradient, weight gradient) goes through oneDNN's inner-product primitive here
(`torch.ops.mkldnn._linear_pointwise`, the op torch.compile's CPU backend emits for linears);
elsewhere, in autocast, under torch.compile and for other dtypes or devices, F.linear is used.
`OneDNNLinear` is the `nn.Linear` that `kernels.apply_cpu_kernels` swaps into a built model; the
LM head and the fused loss call `linear`, `matmul_nt` and `matmul_tn` directly.

Both are IEEE fp32 products with fp32 accumulation; only the summation order differs, so results
agree with F.linear to fp32 rounding (tests/kernels/test_linear.py).

`LMFORGE_CPU_MATMUL=onednn|aten|auto` overrides the choice (auto: oneDNN on x86 CPUs that have
AVX-512 and are not Intel's).
"""

from __future__ import annotations

import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.kernels.dispatch import cpu_kernels_apply

_BACKENDS = ("auto", "onednn", "aten")


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@functools.cache
def onednn_enabled() -> bool:
    """Whether fp32 CPU products go through oneDNN in this process (decided once)."""
    choice = os.environ.get("LMFORGE_CPU_MATMUL", "auto").strip().lower()
    if choice not in _BACKENDS:
        raise LmforgeError(f"LMFORGE_CPU_MATMUL={choice!r}; use one of: {', '.join(_BACKENDS)}")
    available = torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )
    if choice == "aten" or not available:
        return False
    if choice == "onednn":
        return True
    has_avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    return (
        platform.machine() in ("x86_64", "AMD64") and has_avx512 and _cpu_vendor() != "GenuineIntel"
    )


def _onednn_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) on oneDNN: a (M, K), b (N, K), bias (N,) -> (M, N)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _uses_onednn(*tensors: torch.Tensor) -> bool:
    first = tensors[0]
    return (
        cpu_kernels_apply(first.device)
        and all(t.dtype == torch.float32 for t in tensors)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.enabled  # a user who switched oneDNN off keeps it off
        and onednn_enabled()
    )


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T for a (M, K) and b (N, K), no autograd: the products of hand-written backward
    passes (the fused loss)."""
    if _uses_onednn(a, b):
        return _onednn_nt(a, b)
    return a @ b.t()


def matmul_tn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a.T @ b for a (M, N) and b (M, K) -> (N, K), no autograd: a weight gradient."""
    if not _uses_onednn(a, b):
        return a.t() @ b
    N, K = a.shape[1], b.shape[1]
    # The inner-product primitive is fastest when its output features are the wider side.
    if N >= K:
        return _onednn_nt(b.t(), a.t()).t().contiguous()
    return _onednn_nt(a.t(), b.t())


class _OneDNNLinearFunction(torch.autograd.Function):
    """y = x @ W.T + b with all three products on oneDNN. x: (..., K), W: (N, K), b: (N,)."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_nt(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        x, weight = ctx.saved_tensors
        grad_2d = grad_output.reshape(-1, grad_output.shape[-1])  # (M, N)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_nt(grad_2d, weight.t()).view(x.shape)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:
            grad_weight = matmul_tn(grad_2d, x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_2d.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), on oneDNN for fp32 CPU tensors where that is faster."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not _uses_onednn(*tensors):
        return F.linear(x, weight, bias)
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return _onednn_nt(x, weight, bias)
    return _OneDNNLinearFunction.apply(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """nn.Linear (same parameters, names and initialisation) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
