"""Keep freed memory in the process instead of handing it back to the kernel (glibc malloc).

A training step allocates and frees the same large tensors every step (activations, logits,
gradients). glibc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with
fresh pages and unmaps them when freed, and trims the top of its heap beyond a trim threshold, so
every step faults the same memory in again, a page at a time. Measured on the 2-core VM, torch
2.13, gpt2-30m bf16, 8 x 256: about 100,000 minor faults (400 MB) per step, and steps of 650-780 ms;
with both thresholds raised, no faults after the first two steps and steps of 600-630 ms
(docs/benchmarks.md). Raising them keeps freed blocks for reuse, as the caching allocators of GPU
frameworks do and as the jemalloc/tcmalloc preloading of Intel's CPU launcher does. The resident
size no longer shrinks after a peak; the peak itself moves by a few percent (12 fp32 training steps
at the bench shapes, peak RSS kept vs default: gpt2-30m 1511 vs 1468 MiB, bert-30m 1462 vs 1404,
t5-30m 1385 vs 1488), as blocks are reused from the heap instead of mapped afresh.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

import torch

from lmforge.kernels.dispatch import cpu_kernels_apply

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
_MMAP_THRESHOLD_FALLBACK = 1 << 25  # the largest older glibc versions accept (32 MiB)
_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: never trim below 2 GiB of free top


@functools.cache
def keep_freed_memory(device: torch.device | str = "cpu") -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once) when it computes on
    `device`'s CPU; False where the C library is not glibc (macOS, Windows, musl), which then keeps
    its own policy, and for a process that computes on a GPU (`kernels.dispatch`: its tensors live
    in the CUDA caching allocator, and the measured gain was the CPU step's)."""
    if not cpu_kernels_apply(device) or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD):
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_FALLBACK)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    logger.debug("glibc malloc keeps freed memory (mmap and trim thresholds raised)")
    return True
