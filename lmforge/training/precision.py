"""Mixed precision: one `Precision` object holds the autocast dtype, the fp16 grad scaler and the
checks that refuse a precision a device or a model cannot train in.

bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does (Micikevicius et al.,
"Mixed Precision Training"), hence a `GradScaler` enabled for fp16 only. Pretraining and
fine-tuning both train through this object (training/step.py), so fp16 behaves alike in both.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Literal

import torch

from lmforge.config.model import ModelConfig
from lmforge.errors import LmforgeError

logger = logging.getLogger(__name__)

PrecisionName = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""The compute dtype of each `train.precision`; weights and optimizer state stay fp32."""


@dataclass(frozen=True)
class Precision:
    """A precision on a device type: its dtype, autocast context and grad scaler.

    Build it with `from_name`, which refuses what the device cannot do; the constructor itself
    checks only that the name is known.
    """

    name: PrecisionName
    device_type: str
    """torch's device type: "cpu", "cuda", ..."""

    def __post_init__(self) -> None:
        if self.name not in DTYPES:
            raise LmforgeError(f"unknown precision {self.name!r}; use one of: fp32, bf16, fp16")

    @classmethod
    def from_name(cls, name: PrecisionName, device: torch.device | str) -> Precision:
        """`name` on `device`; raise `LmforgeError` when the device cannot train in it."""
        precision = cls(name, torch.device(device).type)
        precision._check_supported()
        if precision.device_type == "cuda":
            allow_tf32_matmuls()
        return precision

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """A context that runs the forward pass (and loss) in this precision; a no-op for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A `GradScaler` that scales only for fp16; disabled it is a transparent pass-through."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    def _check_supported(self) -> None:
        if self.name == "fp16" and self.device_type == "cpu":
            raise LmforgeError(
                "fp16 training is not supported on CPU; use --train.precision=bf16 (or fp32)"
            )
        if (
            self.name == "bf16"
            and self.device_type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise LmforgeError(
                f"this GPU ({torch.cuda.get_device_name()}) has no bf16 support; "
                "use --train.precision=fp16 (or fp32)"
            )


@functools.cache
def allow_tf32_matmuls() -> None:
    """Let fp32 matmuls and convolutions on CUDA run on TF32 tensor cores (10-bit mantissa inputs,
    fp32 accumulation): 8x the fp32 rate on Ampere and later, at a rounding that training does not
    notice (it is what PyTorch defaulted to for matmuls until 1.12). Set once per process, logged,
    for fp32 runs and for the fp32 work left outside autocast in bf16/fp16 runs."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    logger.info("CUDA: fp32 matmuls use TF32 tensor cores (torch.set_float32_matmul_precision)")


def check_fp16_stable(precision: PrecisionName, model: ModelConfig) -> None:
    """Refuse fp16 for T5-style models: without score scaling and with RMSNorm, their activations
    grow past fp16's range and the loss turns to inf/NaN (a long-standing report of T5 users)."""
    if (
        precision == "fp16"
        and model.norm.kind == "rmsnorm"
        and model.attention.score_scale == "none"
    ):
        raise LmforgeError(
            "T5-style models (rmsnorm, unscaled attention) overflow in fp16; "
            "use --train.precision=bf16 (or fp32)"
        )
