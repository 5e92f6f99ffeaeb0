"""training.allocator: freed blocks stay in the process and come back without page faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A training loop in miniature: the same 48 MiB tensor (above glibc's mmap threshold, even at its
# adaptive maximum of 32 MiB) allocated, touched and freed again and again, in a fresh process.
_LOOP = """
import json, resource, sys, torch
from lmforge.training.allocator import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(12 << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
_PAGES = (48 << 20) // 4096


def _run_loop(policy: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _LOOP, policy], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc is Linux's")
def test_a_freed_large_block_is_reused_without_faulting_its_pages_in_again() -> None:
    run = _run_loop("keep")
    if not run["kept"]:
        pytest.skip("the C library is not glibc")
    kept = run["faults"]
    assert all(faults < _PAGES // 10 for faults in kept[-4:]), kept  # the heap has settled
    default = _run_loop("default")["faults"]
    assert all(faults >= _PAGES for faults in default[-4:]), default  # every page, every time
