"""bench/gpu.py (run by bench/gpu.sh): its dry mode, which CI runs where there is no GPU, writes
the JSON and the markdown table and says loudly that it measured nothing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def gpu_bench():  # noqa: ANN201
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO_ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_bench"]


def test_dry_mode_measures_both_sides_and_says_it_is_dry(
    gpu_bench,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,  # noqa: ANN001
) -> None:
    argv = ["--dry", "--skip-pretrain", "--models", "gpt2-tiny", "--out", str(tmp_path)]
    assert gpu_bench.main(argv) == 0
    assert "*** DRY RUN (--dry)" in capsys.readouterr().out
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["dry"] is True and report["matmul_peak_flops"] > 0
    (row,) = report["throughput"]
    assert row["model"] == "gpt2-tiny" and "error" not in row
    assert row["ours_tokens_per_s"] > 0 and row["hf_tokens_per_s"] > 0
    assert [check["met"] for check in report["targets"]] == [False, False]  # dry: never met
    table = (tmp_path / "gpu.md").read_text()
    assert "**DRY RUN" in table and "| gpt2-tiny | 2x32 |" in table


def test_without_a_gpu_the_dry_plan_is_chosen_unasked(
    gpu_bench,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    plans = []
    monkeypatch.setattr(gpu_bench, "measure_throughput", lambda plan, *a: plans.append(plan) or [])
    monkeypatch.setattr(gpu_bench, "measure_matmul_peak", lambda *a, **k: 1.0)
    assert gpu_bench.main(["--skip-pretrain", "--out", str(tmp_path)]) == 0
    assert plans[0].dry and not plans[0].compile
    assert "no CUDA GPU is visible" in (tmp_path / "gpu.md").read_text()


def test_targets_and_table_of_a_full_report(gpu_bench) -> None:  # noqa: ANN001
    plan = gpu_bench.full_plan()
    rows = [{"model": "gpt2-small", "batch_size": 16, "seq_len": 1024, "ours_tokens_per_s": 3e5,
             "hf_tokens_per_s": 1.5e5, "ours_mfu": 0.55, "hf_mfu": 0.27, "ratio": 2.0},
            {"model": "bert-base", "batch_size": 32, "seq_len": 512, "error": "OOM"}]  # fmt: skip
    checks = gpu_bench.targets(rows, plan)
    assert [(c["name"], c["met"]) for c in checks] == [
        ("gpt2-small bf16 MFU", True), ("gpt2-small vs transformers", True)]  # fmt: skip
    report = {"dry": False, "device_name": "NVIDIA H100", "torch": "2.x", "date": "today",
              "matmul_peak_flops": 7e14, "compile": True, "throughput": rows, "targets": checks,
              "notes": [], "pretrain": {"preset": "gpt2-small", "steps": 100,
              "tokens_per_step": 32768, "wall_s": 600.0, "final_loss": 4.1, "final_val_loss": 4.3,
              "run_dir": "r", "loss_curve": [[10, 9.0], [100, 4.1]]}}  # fmt: skip
    table = gpu_bench.markdown(report)
    assert "DRY" not in table and "| gpt2-small | 16x1024 | 300,000 | 55.0% |" in table
    assert "| bert-base | 32x512 | failed: OOM |" in table
    assert "| gpt2-small bf16 MFU | 55.0% | >= 50% | yes |" in table
    assert "Loss curve (step: loss): 10: 9.000, 100: 4.100" in table
