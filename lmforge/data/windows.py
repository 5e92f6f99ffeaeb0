"""Deterministic, resumable, rank-aware windows over a packed token split.

The split's token stream (documents and separators) is cut into `num_windows` windows of
`window_len` tokens, as many as the objective reads for one example (train.seq_len + 1 for CLM).
Consecutive windows share one token: window w covers tokens [w * (window_len - 1),
w * (window_len - 1) + window_len), so with next-token targets every token of the stream is a
target exactly once. Global window index i maps to window perm_e[i % num_windows] with epoch
e = i // num_windows and perm_e a permutation seeded by (seed, e). Every epoch therefore visits
every window exactly once.

Batches are pure functions of the optimizer step: global step s consumes global windows
[s * batch_size, (s + 1) * batch_size), rank r takes its contiguous share of them and cuts it into
micro-batches. The trainer stores only `step` as its data position, which makes resume exact,
and 1 rank x 2 micro-batches sees the same sequences as 2 ranks x 1 micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from lmforge.data.shards import TokenDataset
from lmforge.errors import LmforgeError


class WindowSampler:
    """Maps a global window index to a (window_len,) int64 window of the split.

    A split too short for the windows the run needs has few or no windows (`num_windows`); the
    caller refuses it with `check_split_size`, which can name the user's train.seq_len.
    """

    def __init__(
        self, dataset: TokenDataset, window_len: int, *, seed: int, shuffle: bool = True
    ) -> None:
        # Objectives read at least 2 tokens per example (config and objectives check seq_len).
        assert window_len >= 2, window_len
        self.dataset = dataset
        self.window_len = window_len
        self.stride = window_len - 1  # the one shared token, see the module docstring
        self.seed = seed
        self.shuffle = shuffle
        self.num_windows = max(dataset.num_tokens - 1, 0) // self.stride
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:  # one epoch's permutation cached: consecutive indices share it
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._perm = rng.permutation(self.num_windows)
            self._epoch = epoch
        return self._perm

    def window_start(self, global_index: int) -> int:
        """First token of the window that global index `global_index` maps to."""
        if global_index < 0:
            raise IndexError(f"window index must be >= 0, got {global_index}")
        epoch, position = divmod(global_index, self.num_windows)
        window = int(self._permutation(epoch)[position]) if self.shuffle else position
        return window * self.stride

    def window(self, global_index: int) -> np.ndarray:
        start = self.window_start(global_index)
        return self.dataset.tokens(start, start + self.window_len).astype(np.int64)


def check_split_size(sampler: WindowSampler, needed: int, *, seq_len: int) -> None:
    """Refuse a split with fewer than `needed` windows: the one "split too small" check.

    The message speaks of sequences of `seq_len` (train.seq_len, what the user set), since a
    window may hold more tokens (span corruption) or fewer (BART's framing) than that.
    """
    if sampler.num_windows >= needed:
        return
    dataset = sampler.dataset
    wanted = "one sequence" if needed == 1 else f"one evaluation batch ({needed} sequences)"
    remedy = (
        "lower train.seq_len or train.micro_batch_size, or prepare with a larger --val-fraction"
        if dataset.split == "val"
        else "lower train.seq_len or add data"
    )
    raise LmforgeError(
        f"the {dataset.split} split of {dataset.data_dir} has {dataset.num_tokens} tokens, "
        f"{sampler.num_windows} sequences of train.seq_len={seq_len} "
        f"({sampler.window_len} tokens of text each), too few for {wanted}; {remedy}"
    )


def _rank_rows(batch_size: int, micro_batch_size: int, world_size: int, rank: int) -> int:
    if world_size < 1 or not 0 <= rank < world_size:
        raise LmforgeError(f"rank {rank} is not in a world of size {world_size}")
    if batch_size % world_size:
        raise LmforgeError(
            f"train.batch_size={batch_size} is not divisible by the world size {world_size}"
        )
    per_rank = batch_size // world_size
    if micro_batch_size < 1 or per_rank % micro_batch_size:
        raise LmforgeError(
            f"train.batch_size={batch_size} / world size {world_size} = {per_rank} sequences per "
            f"rank is not divisible by train.micro_batch_size={micro_batch_size}"
        )
    return per_rank


def micro_batches(
    sampler: WindowSampler,
    *,
    step: int,
    batch_size: int,
    micro_batch_size: int,
    rank: int,
    world_size: int,
) -> list[torch.Tensor]:
    """This rank's micro-batches of optimizer step `step`: LongTensors
    (micro_batch_size, window_len)."""
    per_rank = _rank_rows(batch_size, micro_batch_size, world_size, rank)
    first = step * batch_size + rank * per_rank
    rows = np.stack([sampler.window(first + i) for i in range(per_rank)])
    return [
        torch.from_numpy(rows[i : i + micro_batch_size])
        for i in range(0, per_rank, micro_batch_size)
    ]


def eval_batches(
    sampler: WindowSampler,
    *,
    micro_batch_size: int,
    max_batches: int | None,
    rank: int,
    world_size: int,
) -> Iterator[torch.Tensor]:
    """Fixed evaluation batches (micro_batch_size, window_len), the same on every call.

    Pass an unshuffled sampler over the val split, checked with `check_split_size` for
    micro_batch_size x world_size windows. Eval batch b holds windows
    [b * micro_batch_size * world_size, ...) and rank r its r-th share; only whole global batches
    are used, so every rank yields the same number of batches (collectives stay matched).
    """
    _rank_rows(micro_batch_size * world_size, micro_batch_size, world_size, rank)
    global_rows = micro_batch_size * world_size
    num_batches = sampler.num_windows // global_rows
    assert num_batches > 0, "check_split_size(sampler, micro_batch_size * world_size) first"
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    for batch in range(num_batches):
        first = batch * global_rows + rank * micro_batch_size
        rows = [sampler.window(first + i) for i in range(micro_batch_size)]
        yield torch.from_numpy(np.stack(rows))
