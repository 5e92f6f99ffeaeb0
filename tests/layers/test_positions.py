"""Positional schemes against their papers and reference implementations."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.layers.positions import AlibiPositions, alibi_slopes, relative_position_bucket


def _paper_slopes(n: int) -> list[float]:
    """Press et al. (2022): a geometric sequence starting at 2^(-8/n) with ratio 2^(-8/n)."""
    start = 2 ** (-8 / n)
    return [start * start**i for i in range(n)]


@pytest.mark.parametrize("num_heads", [1, 2, 4, 8, 16])
def test_alibi_slopes_power_of_two_match_closed_form(num_heads: int) -> None:
    assert alibi_slopes(num_heads).tolist() == pytest.approx(_paper_slopes(num_heads))


@pytest.mark.parametrize("num_heads", [3, 6, 12, 24])
def test_alibi_slopes_other_head_counts_interleave_next_power(num_heads: int) -> None:
    closest = 2 ** math.floor(math.log2(num_heads))
    expected = _paper_slopes(closest) + _paper_slopes(2 * closest)[0::2][: num_heads - closest]
    assert alibi_slopes(num_heads).tolist() == pytest.approx(expected)


def test_alibi_bias_is_slope_times_key_minus_query_distance() -> None:
    alibi = AlibiPositions(4)
    positions = torch.arange(5)[None]
    bias = alibi.score_bias(positions, positions)  # (1, H, T, S)
    slopes = alibi_slopes(4)
    for h in range(4):
        for i in range(5):
            for j in range(5):
                assert bias[0, h, i, j].item() == pytest.approx(-slopes[h].item() * (i - j))


def test_alibi_matches_bloom_reference_after_softmax() -> None:
    """BLOOM adds m * key_position (not m * (j - i)); the two differ by a per-row constant."""
    transformers = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    mask = torch.ones(1, 6)
    reference = transformers.build_alibi_tensor(mask, 6, torch.float32).view(1, 6, 1, 6)
    ours = AlibiPositions(6).score_bias(torch.arange(6)[None], torch.arange(6)[None])
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    scores = torch.randn(1, 6, 6, 6)
    expected = (scores + reference).masked_fill(~causal, -1e9).softmax(-1)
    actual = (scores + ours).masked_fill(~causal, -1e9).softmax(-1)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_t5_reference(bidirectional: bool) -> None:
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    distances = torch.arange(-300, 301)[:, None]
    expected = t5.T5Attention._relative_position_bucket(
        distances, bidirectional=bidirectional, num_buckets=32, max_distance=128
    )
    actual = relative_position_bucket(
        distances, bidirectional=bidirectional, num_buckets=32, max_distance=128
    )
    assert torch.equal(actual, expected)
