"""CPU kernel choices, made in one place: each is only a speed choice, never a numeric one.

Contract: every kernel here computes what a plain PyTorch op computes, forward and backward, within
floating-point tolerance (summation order, tested against that op in tests/kernels/), and picks
itself by device, dtype and shape alone, never by model. So the models are written in plain PyTorch
(`nn.Linear`, `F.scaled_dot_product_attention`) and the choices are applied here:

- `linear`: fp32 CPU GEMMs on oneDNN where MKL runs AVX2 kernels (AMD AVX-512 CPUs);
  `apply_cpu_kernels(model)` swaps a built model's `nn.Linear` modules for `OneDNNLinear`.
  `LMFORGE_CPU_MATMUL=onednn|aten|auto` overrides the policy.
- `attention.attend`: `F.scaled_dot_product_attention`, or two batched matmuls and a softmax for
  short bf16 sequences on the CPU.
- `unpadding`: a padded batch's token-wise layers on its real tokens only (the real tokens'
  outputs unchanged, zeros at the pads), where enough of the batch is padding.
- `allocator`: glibc keeps freed memory in processes that run models (changes no number at all).

All of them step aside off the CPU by one rule, `dispatch.cpu_kernels_apply(device)`, asked with
the device of the data at hand: on CUDA the plain ops (cuBLAS, SDPA's flash kernels) run.

This package imports torch only: `layers` and `models` use it, it uses neither.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.kernels.dispatch import cpu_kernels_apply
from lmforge.kernels.linear import OneDNNLinear, onednn_enabled


def apply_cpu_kernels(model: nn.Module) -> nn.Module:
    """Swap every plain `nn.Linear` of `model` for `OneDNNLinear` where this process sends fp32
    CPU GEMMs to oneDNN (`onednn_enabled`) and the model is not on another device; return the
    model. Idempotent; call it before wrapping the model (DDP, FSDP, torch.compile).

    A model on `meta` is not placed yet: it is swapped (the class swap holds no memory), and each
    `OneDNNLinear` still runs `F.linear` wherever its input is not a CPU tensor."""
    if onednn_enabled() and _placed_for_cpu_kernels(model):
        for module in model.modules():
            if type(module) is nn.Linear:
                # A class swap, not a new module: the parameters (already in an optimizer or a
                # state dict), names and hooks stay; OneDNNLinear adds no state, only a forward.
                module.__class__ = OneDNNLinear
    return model


def _placed_for_cpu_kernels(model: nn.Module) -> bool:
    """False for a model whose parameters sit on a GPU (or another device the CPU kernels were
    never measured on); True on the CPU and on `meta` (not placed yet)."""
    device = _model_device(model)
    return device.type == "meta" or cpu_kernels_apply(device)


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
