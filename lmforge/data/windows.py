"""Deterministic, resumable, rank-aware windows over a packed token split.

The split's token stream (documents and separators) is cut into `num_windows` non-overlapping
windows of `seq_len` tokens; window w covers tokens [w * seq_len, w * seq_len + seq_len + 1), one
extra token so inputs and shifted targets come from the same row. Global window index i maps to
window perm_e[i % num_windows] with epoch e = i // num_windows and perm_e a permutation seeded by
(seed, e). Every epoch therefore visits every window exactly once.

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
    """Maps a global window index to a (seq_len + 1,) int64 window of the split."""

    def __init__(
        self, dataset: TokenDataset, seq_len: int, *, seed: int, shuffle: bool = True
    ) -> None:
        if seq_len < 1:
            raise LmforgeError(f"train.seq_len must be positive, got {seq_len}")
        self.dataset = dataset
        self.seq_len = seq_len
        self.seed = seed
        self.shuffle = shuffle
        # -1: the last window needs one token past its end for the shifted target.
        self.num_windows = max(dataset.num_tokens - 1, 0) // seq_len
        if self.num_windows == 0:
            raise LmforgeError(
                f"the {dataset.split} split of {dataset.data_dir} has {dataset.num_tokens} tokens, "
                f"too few for one window of train.seq_len={seq_len} (+1); lower train.seq_len or "
                "add data"
            )
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
        return window * self.seq_len

    def window(self, global_index: int) -> np.ndarray:
        start = self.window_start(global_index)
        return self.dataset.tokens(start, start + self.seq_len + 1).astype(np.int64)


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
    """This rank's micro-batches of optimizer step `step`: LongTensors (micro_batch_size, T + 1)."""
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
    """Fixed evaluation batches (micro_batch_size, T + 1), the same on every call.

    Pass an unshuffled sampler over the val split. Eval batch b holds windows
    [b * micro_batch_size * world_size, ...) and rank r its r-th share; only whole global batches
    are used, so every rank yields the same number of batches (collectives stay matched).
    """
    _rank_rows(micro_batch_size * world_size, micro_batch_size, world_size, rank)
    global_rows = micro_batch_size * world_size
    num_batches = sampler.num_windows // global_rows
    if num_batches == 0:
        raise LmforgeError(
            f"the {sampler.dataset.split} split has {sampler.num_windows} windows, fewer than "
            f"train.micro_batch_size x world size = {global_rows}; lower the batch size or "
            "train.seq_len, or prepare with a larger --val-fraction"
        )
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    for batch in range(num_batches):
        first = batch * global_rows + rank * micro_batch_size
        rows = [sampler.window(first + i) for i in range(micro_batch_size)]
        yield torch.from_numpy(np.stack(rows))
