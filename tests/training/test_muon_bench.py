"""bench/muon_vs_adamw.py: its smoke mode sweeps both optimizers and writes the summary, a rerun
reuses the finished runs, and the full benchmark's run options are valid configurations. Nothing
here is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.loading import load_run_config
from tests.conftest import REPO_ROOT, SHARED_DATA, shared_file


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    # The peak matmul rate only scales the reported MFU; measuring it takes seconds per run.
    monkeypatch.setattr("lmforge.training.run.measure_matmul_peak", lambda *_: 1e12)
    import muon_vs_adamw

    return muon_vs_adamw


@pytest.mark.parametrize("model", [
    "gpt2-tiny",
    pytest.param("bert-tiny", marks=pytest.mark.slow),
    pytest.param("t5-tiny", marks=pytest.mark.slow)])  # fmt: skip
def test_smoke_sweeps_both_optimizers_and_reuses_finished_runs(
    model: str,
    bench,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,  # noqa: ANN001
) -> None:
    shared_file("tinyshakespeare/input.txt")  # skips where ../shared/data is absent
    argv = ["--smoke", "--models", model, "--data", str(SHARED_DATA), "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "muon_vs_adamw.json").read_text())

    runs = report["runs"]
    assert [run["optimizer"] for run in runs] == ["adamw", "adamw", "muon", "muon"]
    assert all(not run.get("failed") and len(run["evals"]) == 3 for run in runs)
    (summary,) = report["summaries"]
    adamw_best = min(run["final_val_loss"] for run in runs if run["optimizer"] == "adamw")
    assert summary["target_val_loss"] == adamw_best
    # Muon's rates are multiples of AdamW's best; the rest of the model keeps AdamW's best rate.
    assert {run["lr"] for run in runs[2:]} == {summary["adamw"]["lr"]}
    assert [run["muon_lr"] / run["lr"] for run in runs[2:]] == [1.0, 2.0]
    assert {run["batch_size"] for run in runs} == {4}
    assert summary["adamw"]["tokens_to_target"] is not None  # AdamW's best reaches its own loss
    assert f"| {model} | muon |" in capsys.readouterr().out

    def no_new_runs(*argv: str) -> int:
        raise AssertionError(f"rerun of a finished run: lmforge {' '.join(argv[:2])}")

    monkeypatch.setattr(bench, "lmforge", no_new_runs)
    assert bench.main(argv) == 0
    assert json.loads((tmp_path / "muon_vs_adamw.json").read_text()) == report


def test_full_benchmark_runs_are_valid_configurations(bench, tmp_path: Path) -> None:  # noqa: ANN001
    for model in bench.RECIPES:
        run = bench.Run(model, 64, "muon", 1e-3, 2e-3)
        args = bench.run_args(run, tmp_path / "data", tmp_path / run.name, 1500, smoke=False)
        config = load_run_config(model, args[2:])
        assert config.optim.kind == "muon" and config.optim.muon_lr == 2e-3
        assert config.train.precision == "bf16" and config.train.max_steps == 1500
        assert config.eval.every == 75 == config.log.every
        assert config.train.batch_size == 64


def test_batch_factor_scales_the_batch_and_the_adamw_grid_by_its_sqrt(
    bench,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    trained = []

    def fake_train(run, *_) -> dict:  # noqa: ANN001
        trained.append(run)
        # AdamW's middle rate is best: Muon's rates are multiples of it.
        return {"lr": run.lr, "final_val_loss": abs(run.lr - 2e-3 * 2) + (run.muon_lr or 0)}

    monkeypatch.setattr(bench, "train", fake_train)
    bench.sweep("gpt2-tiny", tmp_path, tmp_path, steps=10, batch_factor=4, smoke=False)
    assert {run.batch_size for run in trained} == {32}
    assert [run.lr for run in trained[:3]] == pytest.approx([2e-3, 4e-3, 8e-3])
    assert [run.muon_lr for run in trained[3:]] == pytest.approx([4e-3, 8e-3, 16e-3])
