"""WindowSampler, micro_batches, eval_batches: coverage, permutations, rank slicing, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.data.prepare import prepare_data
from lmforge.data.shards import TokenDataset
from lmforge.data.windows import WindowSampler, eval_batches, micro_batches
from lmforge.errors import LmforgeError

SEQ_LEN = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, bpe_dir: Path, corpus: list[str]) -> Path:
    root = tmp_path_factory.mktemp("windows")
    (root / "in.txt").write_text("\n\n".join(corpus[100:300]))
    out = root / "data"
    # Small shards so windows cross shard boundaries.
    prepare_data([str(root / "in.txt")], bpe_dir, out, workers=1, val_fraction=0.1,
                 shard_tokens=500, progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def train(data_dir: Path) -> TokenDataset:
    return TokenDataset(data_dir, "train")


def test_windows_tile_the_stream_with_one_token_overlap(train: TokenDataset):
    sampler = WindowSampler(train, SEQ_LEN, seed=0, shuffle=False)
    assert sampler.num_windows == (train.num_tokens - 1) // SEQ_LEN
    stream = train.tokens(0, train.num_tokens).astype(np.int64)
    for i in range(sampler.num_windows):
        window = sampler.window(i)
        assert window.dtype == np.int64 and window.shape == (SEQ_LEN + 1,)
        assert np.array_equal(window, stream[i * SEQ_LEN : (i + 1) * SEQ_LEN + 1])


def test_each_epoch_is_a_seeded_permutation(train: TokenDataset):
    sampler = WindowSampler(train, SEQ_LEN, seed=7)
    n = sampler.num_windows
    starts = [sampler.window_start(i) // SEQ_LEN for i in range(3 * n)]
    for epoch in range(3):
        assert sorted(starts[epoch * n : (epoch + 1) * n]) == list(range(n))
    expected = np.random.Generator(np.random.PCG64([7, 1])).permutation(n)
    assert starts[n : 2 * n] == expected.tolist()
    assert starts[:n] != starts[n : 2 * n]  # epochs differ
    other = WindowSampler(train, SEQ_LEN, seed=8)
    assert [other.window_start(i) // SEQ_LEN for i in range(n)] != starts[:n]


def test_ranks_and_micro_batches_see_the_same_sequences(train: TokenDataset):
    sampler = WindowSampler(train, SEQ_LEN, seed=1)
    step = 3
    single = micro_batches(
        sampler, step=step, batch_size=8, micro_batch_size=4, rank=0, world_size=1
    )
    ranks = [
        micro_batches(sampler, step=step, batch_size=8, micro_batch_size=4, rank=r, world_size=2)
        for r in range(2)
    ]
    assert len(single) == 2 and all(len(r) == 1 for r in ranks)
    assert single[0].dtype == torch.long and single[0].shape == (4, SEQ_LEN + 1)
    assert torch.equal(torch.cat(single), torch.cat([r[0] for r in ranks]))
    expected = np.stack([sampler.window(step * 8 + i) for i in range(8)])
    assert torch.equal(torch.cat(single), torch.from_numpy(expected))


def test_resume_by_step_gives_the_same_batches(train: TokenDataset):
    kwargs = {"batch_size": 4, "micro_batch_size": 2, "rank": 0, "world_size": 1}
    first = WindowSampler(train, SEQ_LEN, seed=3)
    run = [micro_batches(first, step=s, **kwargs) for s in range(6)]
    resumed = WindowSampler(train, SEQ_LEN, seed=3)  # a fresh process after step 3
    for step in range(3, 6):
        assert all(map(torch.equal, run[step], micro_batches(resumed, step=step, **kwargs)))


@pytest.mark.parametrize(
    ("batch_size", "micro_batch_size", "world_size", "message"),
    [(6, 2, 4, "train.batch_size=6 is not divisible by the world size 4"),
     (8, 3, 2, "train.micro_batch_size=3")],
)  # fmt: skip
def test_batch_divisibility_errors(train, batch_size, micro_batch_size, world_size, message):
    sampler = WindowSampler(train, SEQ_LEN, seed=0)
    with pytest.raises(LmforgeError, match=message):
        micro_batches(sampler, step=0, batch_size=batch_size,
                      micro_batch_size=micro_batch_size, rank=0, world_size=world_size)  # fmt: skip


def test_split_too_small_for_seq_len(train: TokenDataset):
    with pytest.raises(LmforgeError, match="too few for one window of train.seq_len"):
        WindowSampler(train, train.num_tokens, seed=0)


def test_eval_batches_are_fixed_and_rank_sharded(data_dir: Path):
    val = WindowSampler(TokenDataset(data_dir, "val"), 8, seed=0, shuffle=False)
    single = list(eval_batches(val, micro_batch_size=2, max_batches=None, rank=0, world_size=1))
    assert len(single) == val.num_windows // 2
    assert single[0].shape == (2, 9)
    assert all(map(torch.equal, single, eval_batches(val, micro_batch_size=2, max_batches=None,
                                                     rank=0, world_size=1)))  # fmt: skip
    ranks = [
        list(eval_batches(val, micro_batch_size=1, max_batches=3, rank=r, world_size=2))
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 3
    interleaved = torch.cat([torch.cat([a, b]) for a, b in zip(*ranks, strict=True)])
    assert torch.equal(interleaved, torch.cat(single[:3]))
