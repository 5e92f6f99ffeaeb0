"""Checkpoint round trip, pruning, LATEST atomicity and the error messages."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.models.weights import load_model_weights
from lmforge.run_dir import latest_checkpoint, resolve_checkpoint
from lmforge.training.checkpoint import load_checkpoint, save_checkpoint
from lmforge.training.optim import build_optimizer


class TiedLM(nn.Module):
    def __init__(self, vocab_size: int = 13, d_model: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.proj(self.embed(ids)))


def _trained(seed: int = 0) -> tuple[TiedLM, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = TiedLM()
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    ids = torch.randint(0, 13, (2, 5))
    for _ in range(2):
        optimizer.zero_grad()
        model(ids).sum().backward()
        optimizer.step()
    return model, optimizer


def _save(run_dir: Path, step: int, model: nn.Module, optimizer=None, keep_last: int = 3) -> Path:
    state = {"tokens_seen": step * 10, "data": {"position": step}, "extra": {"note": "x"}}
    return save_checkpoint(run_dir, step, model, optimizer, state, {"d_model": 8}, keep_last)


def test_round_trip_restores_weights_optimizer_rng_and_ties(tmp_path: Path) -> None:
    model, optimizer = _trained()
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    path = _save(tmp_path, 100, model, optimizer)
    expected = (torch.rand(3), np.random.rand(), random.random())

    fresh, _ = _trained(seed=1)
    fresh_optimizer = build_optimizer(fresh, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    state = load_checkpoint(tmp_path, fresh, fresh_optimizer)

    assert path.name == "step-0000100" and state["step"] == 100
    assert state["tokens_seen"] == 1000 and state["data"] == {"position": 100}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    assert fresh.lm_head.weight is fresh.embed.weight
    saved_state = optimizer.state_dict()["state"]
    for index, entry in fresh_optimizer.state_dict()["state"].items():
        torch.testing.assert_close(entry["exp_avg"], saved_state[index]["exp_avg"])
        torch.testing.assert_close(entry["step"], saved_state[index]["step"])
    assert fresh_optimizer.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    assert torch.equal(torch.rand(3), expected[0])
    assert np.random.rand() == expected[1] and random.random() == expected[2]
    assert json.loads((path / "model_config.json").read_text()) == {"d_model": 8}


def test_keep_last_prunes_older_checkpoints(tmp_path: Path) -> None:
    model, _ = _trained()
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, model, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert names == ["step-0000030", "step-0000040"]
    assert latest_checkpoint(tmp_path).name == "step-0000040"


def test_saving_an_older_step_never_deletes_it(tmp_path: Path) -> None:
    model, _ = _trained()
    for step in (30, 40, 10):  # e.g. a run restarted from scratch into the same dir
        _save(tmp_path, step, model, keep_last=1)
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    assert (tmp_path / "checkpoints" / "step-0000010" / "model.safetensors").is_file()


def test_leftover_tmp_dir_is_ignored(tmp_path: Path) -> None:
    model, _ = _trained()
    _save(tmp_path, 10, model)
    crashed = tmp_path / "checkpoints" / "step-0000020.tmp"
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    assert resolve_checkpoint(tmp_path).name == "step-0000010"
    _save(tmp_path, 20, model)
    assert latest_checkpoint(tmp_path).name == "step-0000020"
    assert not crashed.exists()


def test_resaving_the_same_step_replaces_it(tmp_path: Path) -> None:
    model, _ = _trained()
    _save(tmp_path, 10, model)
    _save(tmp_path, 10, model)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()] == ["step-0000010"]


def test_non_writer_writes_nothing(tmp_path: Path) -> None:
    model, _ = _trained()
    path = save_checkpoint(tmp_path, 5, model, None, {}, {}, 1, is_writer=False)
    assert path == tmp_path / "checkpoints" / "step-0000005" and not path.exists()


def test_resolve_accepts_run_checkpoints_and_step_dirs(tmp_path: Path) -> None:
    model, _ = _trained()
    step_dir = _save(tmp_path, 10, model)
    for path in (tmp_path, tmp_path / "checkpoints", step_dir):
        assert resolve_checkpoint(path) == step_dir
    assert latest_checkpoint(tmp_path / "empty") is None


def test_shape_mismatch_names_keys_and_both_shapes(tmp_path: Path) -> None:
    _save(tmp_path, 1, TiedLM(d_model=8))
    with pytest.raises(LmforgeError, match=r"different model shape: .*\(13, 8\).*\(13, 16\)"):
        load_model_weights(tmp_path, TiedLM(d_model=16))


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    _save(tmp_path, 1, TiedLM())
    other = TiedLM()
    other.extra = nn.Linear(2, 2)
    del other.proj
    with pytest.raises(LmforgeError, match=r"missing keys extra\.weight.*unexpected keys proj"):
        load_model_weights(tmp_path, other)


def test_truncated_weights_file_is_named(tmp_path: Path) -> None:
    path = _save(tmp_path, 1, TiedLM()) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(LmforgeError, match=r"model\.safetensors is truncated or corrupt"):
        load_model_weights(tmp_path, TiedLM())


def test_corrupt_optimizer_file_is_named(tmp_path: Path) -> None:
    model, optimizer = _trained()
    path = _save(tmp_path, 1, model, optimizer) / "optimizer.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LmforgeError, match=r"optimizer\.pt is truncated or corrupt"):
        load_checkpoint(tmp_path, model, optimizer)


def test_missing_checkpoint_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(LmforgeError, match="expected a run dir"):
        resolve_checkpoint(tmp_path)


def test_latest_pointing_at_missing_dir_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "LATEST").write_text("step-0000099\n")
    with pytest.raises(LmforgeError, match="step-0000099.*does not exist"):
        latest_checkpoint(tmp_path)
