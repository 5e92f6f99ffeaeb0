"""The fine-tuning parity benchmark in its smoke mode (`bench/finetune_parity.py --smoke`): for
every (task, model) pair, lmforge and transformers start from the same weights and agree on the
first batch's loss within 1e-4 and on its gradient norm within 1e-4 relative, and lmforge's state
rebuilt for the transformers side replays the CLI run's logged step-1 loss. A few steps on
width-32 models; nothing here is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA, shared_file


def test_smoke_first_step_losses_agree_for_every_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("sacrebleu")
    pytest.importorskip("rouge_score")
    shared_file("sst")  # skips where ../shared/data is absent
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import finetune_parity

    code = finetune_parity.main(["--smoke", "--data", str(SHARED_DATA), "--out", str(tmp_path)])

    runs = json.loads((tmp_path / "parity.json").read_text())["runs"]
    assert code == 0
    assert [run["pair"] for run in runs] == list(finetune_parity.PAIRS)
    for run in runs:
        first = run["first_step"]
        assert abs(first["loss_difference"]) < 1e-4, run["pair"]
        assert abs(first["grad_norm_difference"]) < 1e-4, run["pair"]  # the same heads
        assert first["replayed_loss"] == pytest.approx(first["logged_loss"], abs=1e-6), run["pair"]
