"""lmforge bench: both sides of the benchmark step run for every family (never timed here)."""

from __future__ import annotations

import pytest

from lmforge.bench import build_step

pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["gpt2-tiny", "bloom-tiny", "bert-tiny", "t5-tiny", "bart-tiny"])
@pytest.mark.parametrize("side", ["ours", "hf"])
def test_benchmark_step_runs_on_both_sides(name: str, side: str) -> None:
    # transformers' encoder-decoders shift their labels from the configured decoder start token:
    # the benchmark's models must carry one, as a run's do.
    step = build_step(side, name, "fp32", batch_size=2, seq_len=16)
    step()
