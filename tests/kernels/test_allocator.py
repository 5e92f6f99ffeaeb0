"""kernels.allocator: freed blocks stay in the process and come back without page faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A training loop in miniature, in a fresh process: a 48 MiB tensor (above glibc's mmap threshold,
# even at its adaptive maximum of 32 MiB) is allocated, touched and freed, then a 40 MiB one takes
# its place. The second must reuse the first one's pages: no page faults, and the resident size
# never drops by the freed block. (The same size again is not a fair probe on glibc < 2.38: its
# memalign asks for size + alignment, a little more than the freed block, until freed neighbours
# merge; training steps free many blocks at once and settle within two steps.)
_LOOP = """
import json, resource, sys, torch
from lmforge.kernels.allocator import keep_freed_memory

def resident_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

kept = sys.argv[1] == "keep" and keep_freed_memory()
faults, dropped = [], []
for _ in range(8):
    block = torch.ones(12 << 20)
    before_free = resident_mib()
    del block
    dropped.append(before_free - resident_mib())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(10 << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(json.dumps({"kept": kept, "faults": faults, "dropped_mib": dropped}))
"""
_PAGES = (40 << 20) // 4096


def _run_loop(policy: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _LOOP, policy], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc is Linux's")
def test_a_freed_large_block_is_reused_without_faulting_its_pages_in_again() -> None:
    kept = _run_loop("keep")
    if not kept["kept"]:
        pytest.skip("the C library is not glibc")
    assert all(faults < _PAGES // 10 for faults in kept["faults"]), kept
    assert all(dropped < 8 for dropped in kept["dropped_mib"]), kept  # nothing given back
    default = _run_loop("default")
    assert all(faults >= _PAGES for faults in default["faults"]), default  # every page, every time
    assert all(dropped > 40 for dropped in default["dropped_mib"]), default
