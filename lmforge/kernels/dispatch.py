"""The one rule by which the CPU-specific kernels step aside: they run where the device type is
"cpu", and nowhere else.

Every choice in this package (oneDNN linears, the matmul attention for short bf16 sequences,
padding removal, glibc's allocator policy) was measured on CPUs and pays only there. On CUDA the
plain PyTorch ops are the fast path already: `F.linear` is cuBLAS(Lt), SDPA picks its flash or
memory-efficient kernel (with `is_causal=True` instead of a materialised mask wherever
`layers/masks.py` can say so), the caching allocator owns device memory, and a `nonzero()` to find
the real tokens would stall the host on the device once per forward pass. Any other device type
(`meta` in tests, `mps`, `xpu`) gets the plain ops too: nothing here was measured there.

Each kernel asks `cpu_kernels_apply(device)` with the device of the tensor or module it is about
to touch, so the decision follows the data (a model moved to a GPU after building steps aside at
its next forward pass) and tests check it with tensors on `meta` where no GPU is present.
"""

from __future__ import annotations

import torch

CPU_KERNEL_DEVICE_TYPE = "cpu"


def cpu_kernels_apply(device: torch.device | str) -> bool:
    """Whether the CPU-specific kernels may run on `device` (its type is "cpu")."""
    return torch.device(device).type == CPU_KERNEL_DEVICE_TYPE


def should_compile(setting: bool | str, device: torch.device | str) -> bool:
    """`train.compile` (true, false or "auto") resolved for `device`."""
    return compile_by_default(device) if setting == "auto" else bool(setting)


def compile_by_default(device: torch.device | str) -> bool:
    """`train.compile=auto`: compile on CUDA, where Inductor's Triton kernels fuse the elementwise
    work between the GEMMs; not on the CPU, where a compile costs minutes for a few percent (and
    bypasses the oneDNN linears, which leave compiled regions to Inductor's own lowering)."""
    return torch.device(device).type == "cuda"


def default_device() -> torch.device:
    """The device `--run.device=auto` picks on this machine, before any process group exists."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
