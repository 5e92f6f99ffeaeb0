"""Mixed-precision plumbing: autocast contexts, the fp16 grad scaler and support checks.

bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does (Micikevicius et al.,
"Mixed Precision Training"), hence a `GradScaler` enabled for fp16 only.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from lmforge.errors import LmforgeError

Precision = Literal["fp32", "bf16", "fp16"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check_known(precision: str) -> None:
    if precision not in ("fp32", "bf16", "fp16"):
        raise LmforgeError(f"unknown precision {precision!r}; use one of: fp32, bf16, fp16")


def check_precision_supported(precision: Precision, device: torch.device | str) -> None:
    """Raise `LmforgeError` when `device` cannot train in `precision`."""
    _check_known(precision)
    device_type = torch.device(device).type
    if precision == "fp16" and device_type == "cpu":
        raise LmforgeError(
            "fp16 training is not supported on CPU; use --train.precision=bf16 (or fp32)"
        )
    if precision == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LmforgeError(
            f"this GPU ({torch.cuda.get_device_name()}) has no bf16 support; "
            "use --train.precision=fp16 (or fp32)"
        )


def autocast_context(
    precision: Precision, device_type: str
) -> contextlib.AbstractContextManager[None]:
    """A context that runs the forward pass (and loss) in `precision`; a no-op for fp32."""
    _check_known(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(precision: Precision, device_type: str) -> torch.amp.GradScaler:
    """A `GradScaler` that scales only for fp16; disabled it is a transparent pass-through."""
    _check_known(precision)
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")
