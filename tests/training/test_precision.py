"""The precision object: support checks, autocast, the fp16 grad scaler, the fp16 refusal for
T5-style models."""

from __future__ import annotations

import pytest
import torch

from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.training.precision import DTYPES, Precision, check_fp16_stable

T5_FP16_LINE = (
    "T5-style models (rmsnorm, unscaled attention) overflow in fp16; "
    "use --train.precision=bf16 (or fp32)"
)


def test_fp16_on_cpu_is_refused_with_bf16_hint() -> None:
    with pytest.raises(LmforgeError, match="bf16"):
        Precision.from_name("fp16", "cpu")
    Precision.from_name("bf16", "cpu")
    Precision.from_name("fp32", torch.device("cpu"))


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(LmforgeError, match="unknown precision 'fp8'; use one of: fp32, bf16, fp16"):
        Precision.from_name("fp8", "cpu")


def test_autocast_and_scaler_follow_precision() -> None:
    with Precision.from_name("bf16", "cpu").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with Precision.from_name("fp32", "cpu").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not Precision.from_name("bf16", "cpu").grad_scaler().is_enabled()
    # The device check lives in from_name; the object itself can describe fp16 on any device.
    assert Precision("fp16", "cpu").grad_scaler().is_enabled()


def test_dtype_map_covers_every_precision() -> None:
    assert {name: Precision(name, "cpu").dtype for name in ("fp32", "bf16", "fp16")} == DTYPES


def test_fp16_is_refused_for_t5_style_models_only() -> None:
    with pytest.raises(LmforgeError) as refused:
        check_fp16_stable("fp16", get_preset("t5-tiny"))
    assert str(refused.value) == T5_FP16_LINE
    check_fp16_stable("bf16", get_preset("t5-tiny"))
    check_fp16_stable("fp16", get_preset("bart-tiny"))
    check_fp16_stable("fp16", get_preset("gpt2-tiny"))


def test_cuda_precisions_turn_on_tf32_matmuls_and_cpu_ones_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lmforge.training.precision as precision_module

    calls = []
    monkeypatch.setattr(precision_module, "allow_tf32_matmuls", lambda: calls.append(1))
    Precision.from_name("fp32", "cpu")
    Precision.from_name("bf16", "cpu")
    assert calls == []
    Precision.from_name("fp32", "cuda")  # fp32 needs no capability check: testable without a GPU
    assert calls == [1]


def test_tf32_is_set_through_torch_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from lmforge.training.precision import allow_tf32_matmuls

    precisions = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", precisions.append)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with caplog.at_level("INFO"):
        allow_tf32_matmuls.__wrapped__()
    assert precisions == ["high"] and torch.backends.cudnn.allow_tf32 is True
    assert "TF32" in caplog.text
