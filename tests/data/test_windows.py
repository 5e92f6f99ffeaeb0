"""WindowSampler, micro_batches, eval_batches: coverage, permutations, rank slicing, resume;
check_split_size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.data.prepare import prepare_data
from lmforge.data.shards import TokenDataset
from lmforge.data.windows import WindowSampler, check_split_size, eval_batches, micro_batches
from lmforge.errors import LmforgeError

SEQ_LEN = 16
WINDOW_LEN = SEQ_LEN + 1
"""What CLM reads for SEQ_LEN inputs: the inputs and one more token for the shifted targets."""


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
    sampler = WindowSampler(train, WINDOW_LEN, seed=0, shuffle=False)
    assert sampler.num_windows == (train.num_tokens - 1) // SEQ_LEN
    stream = train.tokens(0, train.num_tokens).astype(np.int64)
    for i in range(sampler.num_windows):
        window = sampler.window(i)
        assert window.dtype == np.int64 and window.shape == (SEQ_LEN + 1,)
        assert np.array_equal(window, stream[i * SEQ_LEN : (i + 1) * SEQ_LEN + 1])


def test_each_epoch_is_a_seeded_permutation(train: TokenDataset):
    sampler = WindowSampler(train, WINDOW_LEN, seed=7)
    n = sampler.num_windows
    starts = [sampler.window_start(i) // SEQ_LEN for i in range(3 * n)]
    for epoch in range(3):
        assert sorted(starts[epoch * n : (epoch + 1) * n]) == list(range(n))
    expected = np.random.Generator(np.random.PCG64([7, 1])).permutation(n)
    assert starts[n : 2 * n] == expected.tolist()
    assert starts[:n] != starts[n : 2 * n]  # epochs differ
    other = WindowSampler(train, WINDOW_LEN, seed=8)
    assert [other.window_start(i) // SEQ_LEN for i in range(n)] != starts[:n]


def test_ranks_and_micro_batches_see_the_same_sequences(train: TokenDataset):
    sampler = WindowSampler(train, WINDOW_LEN, seed=1)
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
    first = WindowSampler(train, WINDOW_LEN, seed=3)
    run = [micro_batches(first, step=s, **kwargs) for s in range(6)]
    resumed = WindowSampler(train, WINDOW_LEN, seed=3)  # a fresh process after step 3
    for step in range(3, 6):
        assert all(map(torch.equal, run[step], micro_batches(resumed, step=step, **kwargs)))


@pytest.mark.parametrize(
    ("batch_size", "micro_batch_size", "world_size", "message"),
    [(6, 2, 4, "train.batch_size=6 is not divisible by the world size 4"),
     (8, 3, 2, "train.micro_batch_size=3")],
)  # fmt: skip
def test_batch_divisibility_errors(train, batch_size, micro_batch_size, world_size, message):
    sampler = WindowSampler(train, WINDOW_LEN, seed=0)
    with pytest.raises(LmforgeError, match=message):
        micro_batches(sampler, step=0, batch_size=batch_size,
                      micro_batch_size=micro_batch_size, rank=0, world_size=world_size)  # fmt: skip


def test_split_too_small_for_seq_len(train: TokenDataset):
    sampler = WindowSampler(train, train.num_tokens + 1, seed=0)
    assert sampler.num_windows == 0
    with pytest.raises(LmforgeError, match="sequences of train.seq_len=.*too few for one sequence"):
        check_split_size(sampler, 1, seq_len=train.num_tokens)


def test_split_too_small_names_the_users_seq_len_not_the_window(train: TokenDataset):
    # Span corruption reads more tokens per sequence than seq_len (568 for 512): the user set 512.
    seq_len = train.num_tokens - 10
    sampler = WindowSampler(train, train.num_tokens + 56, seed=0)
    with pytest.raises(LmforgeError) as refused:
        check_split_size(sampler, 1, seq_len=seq_len)
    message = str(refused.value)
    assert f"train.seq_len={seq_len} ({train.num_tokens + 56} tokens of text each)" in message
    assert "lower train.seq_len or add data" in message


def test_val_split_smaller_than_one_evaluation_batch(data_dir: Path):
    val = WindowSampler(TokenDataset(data_dir, "val"), 9, seed=0, shuffle=False)
    check_split_size(val, val.num_windows, seq_len=8)
    with pytest.raises(LmforgeError) as refused:
        check_split_size(val, val.num_windows + 1, seq_len=8)
    message = str(refused.value)
    assert f"{val.num_windows} sequences of train.seq_len=8" in message
    assert f"too few for one evaluation batch ({val.num_windows + 1} sequences)" in message
    assert "--val-fraction" in message


def test_eval_batches_are_fixed_and_rank_sharded(data_dir: Path):
    val = WindowSampler(TokenDataset(data_dir, "val"), 9, seed=0, shuffle=False)
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
