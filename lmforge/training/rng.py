"""Capture and restore the random number generators (torch CPU and CUDA, numpy, Python) as JSON."""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The states of the torch (CPU and CUDA), numpy and Python generators, JSON-serialisable."""
    state: dict[str, Any] = {
        "torch": _bytes_to_text(torch.get_rng_state()),
        "numpy": _numpy_state_to_json(np.random.get_state()),
        "python": _python_state_to_json(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_bytes_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `capture_rng_state` returned; absent entries are left alone."""
    if "torch" in state:
        torch.set_rng_state(_text_to_bytes(state["torch"]))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(
            (kind, _words_from_text(keys).astype(np.uint32), pos, has_gauss, cached)
        )
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(int(w) for w in _words_from_text(internal)), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        # A resume on fewer GPUs than the save restores the devices both runs have.
        for index in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(_text_to_bytes(saved[index]), index)


def _bytes_to_text(tensor: torch.Tensor) -> str:
    # base64 of the uint8 state: 5 KiB of text instead of ~20 KiB of JSON ints.
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _text_to_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _numpy_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    kind, keys, pos, has_gauss, cached = state
    return [
        kind,
        base64.b64encode(keys.astype("<u4").tobytes()).decode("ascii"),
        int(pos),
        int(has_gauss),
        float(cached),
    ]


def _python_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    # The Mersenne Twister state is 625 words below 2**32 (624 keys and the position).
    version, internal, gauss_next = state
    words = np.array(internal, dtype="<u4").tobytes()
    return [version, base64.b64encode(words).decode("ascii"), gauss_next]


def _words_from_text(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u4")


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys, well mixed (numpy's SeedSequence), so nearby keys
    such as consecutive steps give unrelated streams."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)
