"""kernels.apply_cpu_kernels: models are built plain; the policy alone decides which linears run on
oneDNN, and the swap changes no parameter and no number."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import lmforge.kernels.linear as linear_module
from lmforge.config.presets import get_preset
from lmforge.kernels import apply_cpu_kernels
from lmforge.kernels.linear import OneDNNLinear
from lmforge.models.heads import TaskHead
from lmforge.models.lm import build_model

HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
PRESETS = ["gpt2-tiny", "bert-tiny", "t5-tiny"]


@pytest.fixture
def policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set LMFORGE_CPU_MATMUL for this test; the process-wide decision is taken afresh."""

    def set_policy(choice: str) -> None:
        if choice == "onednn" and not HAS_ONEDNN:
            pytest.skip("this torch build has no oneDNN")
        monkeypatch.setenv("LMFORGE_CPU_MATMUL", choice)
        linear_module.onednn_enabled.cache_clear()

    yield set_policy
    linear_module.onednn_enabled.cache_clear()


def _linear_types(model: nn.Module) -> set[type]:
    return {type(module) for module in model.modules() if isinstance(module, nn.Linear)}


@pytest.mark.parametrize("preset", PRESETS)
def test_built_models_get_onednn_linears_when_the_policy_says_so(
    policy: Callable[[str], None], preset: str
) -> None:
    policy("onednn")
    assert _linear_types(build_model(get_preset(preset))) == {OneDNNLinear}


@pytest.mark.parametrize("preset", PRESETS)
def test_aten_policy_keeps_plain_linears(policy: Callable[[str], None], preset: str) -> None:
    policy("aten")
    assert _linear_types(build_model(get_preset(preset))) == {nn.Linear}


def test_a_task_head_added_after_building_is_swapped_too(policy: Callable[[str], None]) -> None:
    policy("onednn")
    head = apply_cpu_kernels(nn.Sequential(TaskHead(32, 3, 0.0)))
    assert _linear_types(head) == {OneDNNLinear}


@pytest.mark.parametrize("preset", PRESETS)
def test_swap_keeps_parameters_and_gives_the_same_numbers(
    policy: Callable[[str], None], preset: str
) -> None:
    policy("aten")
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).eval()
    parameters = dict(model.named_parameters())
    ids = torch.randint(5, 100, (2, 12))
    inputs = {"input_ids": ids}
    if model.config.family == "encoder_decoder":
        inputs["decoder_input_ids"] = ids
    plain = model(**inputs).logits
    policy("onednn")
    apply_cpu_kernels(model)
    assert _linear_types(model) == {OneDNNLinear}
    assert dict(model.named_parameters()) == parameters  # the same tensors, not copies
    swapped = model(**inputs).logits
    # fp32 products of different libraries differ in summation order only.
    torch.testing.assert_close(swapped, plain, rtol=1e-5, atol=1e-5 * plain.abs().max().item())
