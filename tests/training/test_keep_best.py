"""Keep-best: checkpoints/best holds the weights of the lowest validation loss, pruning never
deletes it, and a resumed run still continues from LATEST and judges as the uninterrupted one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli.main import main
from lmforge.errors import LmforgeError
from lmforge.run_dir import latest_checkpoint, remove_leftovers, resolve_checkpoint
from lmforge.training.checkpoint import save_best_checkpoint
from lmforge.training.trainer import Trainer
from lmforge.training.validation import Validation
from tests.conftest import TINY_MODEL

# Validation loss by step: falls to step 4, then rises (overfitting), as the runs did.
SCRIPTED_LOSS = {2: 3.0, 4: 2.0, 6: 2.5, 8: 2.8}
COMMON = [
    "--train.max_steps=8",
    "--train.batch_size=2",
    "--eval.every=2",
    "--checkpoint.every=3",  # evaluations at 2, 4, 6, 8; checkpoints at 3, 6, 8
    "--checkpoint.keep_last=1",
]


def pretrain(data: Path, run_dir: Path, *extra: str) -> int:
    args = ["pretrain", "gpt2-tiny", f"--data.path={data}", f"--run.dir={run_dir}"]
    return main([*args, *TINY_MODEL, *COMMON, *extra])


@pytest.fixture
def scripted_validation(monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, torch.Tensor]]:
    """Make each evaluation report SCRIPTED_LOSS[step]; return the weights each one saw."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    step = {"now": 0}
    original = Trainer.maybe_evaluate

    def note_step(self: Trainer) -> None:
        step["now"] = self.state.step
        original(self)

    def run(self: Validation, model: torch.nn.Module, raw_model: torch.nn.Module) -> dict:
        seen[step["now"]] = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
        loss = SCRIPTED_LOSS[step["now"]]
        return {"val_loss": loss, "val_perplexity": math.exp(loss)}

    monkeypatch.setattr(Trainer, "maybe_evaluate", note_step)
    monkeypatch.setattr(Validation, "run", run)
    return seen


def best_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "checkpoints" / "best" / "trainer_state.json").read_text())


def test_best_is_the_lowest_validation_loss_and_survives_pruning(
    python_docs_data: Path, tmp_path: Path, scripted_validation: dict, capsys
) -> None:
    run_dir = tmp_path / "run"
    assert pretrain(python_docs_data, run_dir) == 0
    best = run_dir / "checkpoints" / "best"
    assert best_state(run_dir)["step"] == 4  # not a checkpoint step
    assert best_state(run_dir)["eval"]["val_loss"] == 2.0
    weights = load_file(best / "model.safetensors")
    for name, tensor in weights.items():
        assert torch.equal(tensor, scripted_validation[4][name]), name
    assert not all(torch.equal(t, scripted_validation[8][k]) for k, t in weights.items())
    # keep_last=1 pruned steps 3 and 6 but not best; LATEST names the last step.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "LATEST", "best", "step-0000008"]  # fmt: skip
    assert latest_checkpoint(run_dir).name == "step-0000008"
    assert resolve_checkpoint(best) == best
    printed = capsys.readouterr().out
    assert "final step 8: val loss 2.8000" in printed
    assert "best  step 4: val loss 2.0000" in printed
    assert not (best / "optimizer.pt").exists()  # weights only: for use, not for resuming
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["best_val_loss"] for r in rows if "val_loss" in r] == [3.0, 2.0, 2.0, 2.0]


def test_best_serves_generate_and_refuses_resume(
    python_docs_data: Path, tmp_path: Path, scripted_validation: dict, capsys
) -> None:
    run_dir = tmp_path / "run"
    assert pretrain(python_docs_data, run_dir) == 0
    best = run_dir / "checkpoints" / "best"
    args = ["generate", str(best), "--prompt", "def", "--max-new-tokens", "3", "--num-samples", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert pretrain(python_docs_data, run_dir, f"--resume={best}", "--train.max_steps=10") == 2
    assert "holds no optimizer.pt" in capsys.readouterr().err


def test_resume_continues_from_latest_and_keeps_the_best(
    python_docs_data: Path, tmp_path: Path, scripted_validation: dict, monkeypatch
) -> None:
    straight = tmp_path / "straight"
    assert pretrain(python_docs_data, straight) == 0

    interrupted = tmp_path / "interrupted"
    original = Trainer.maybe_checkpoint

    def crash_after_step_6(self: Trainer) -> None:
        original(self)
        if self.state.step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "maybe_checkpoint", crash_after_step_6)
    assert pretrain(python_docs_data, interrupted) == 130
    monkeypatch.setattr(Trainer, "maybe_checkpoint", original)
    scripted_validation.clear()
    assert pretrain(python_docs_data, interrupted) == 0

    assert sorted(scripted_validation) == [8]  # resumed at step 6 (LATEST), not at best's 4
    # The best loss so far came back with the trainer state: step 8's 2.8 did not replace it.
    assert best_state(interrupted)["step"] == 4
    rows = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    straight_rows = [
        json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r.get("loss") for r in rows] == [r.get("loss") for r in straight_rows]
    for name in ("model.safetensors",):
        a = load_file(straight / "checkpoints" / "best" / name)
        b = load_file(interrupted / "checkpoints" / "best" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_best_false_keeps_none(
    python_docs_data: Path, tmp_path: Path, scripted_validation: dict
) -> None:
    run_dir = tmp_path / "run"
    assert pretrain(python_docs_data, run_dir, "--checkpoint.keep_best=false") == 0
    assert not (run_dir / "checkpoints" / "best").exists()


def test_non_finite_best_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    good = {"w": torch.ones(3)}
    save_best_checkpoint(tmp_path, 2, good, {"eval": {"val_loss": 1.0}}, {"family": "gpt2"})
    with pytest.raises(LmforgeError, match="w holds NaN or inf"):
        save_best_checkpoint(tmp_path, 4, {"w": torch.tensor([1.0, math.nan, 0.0])}, {}, {})
    best = tmp_path / "checkpoints" / "best"
    assert torch.equal(load_file(best / "model.safetensors")["w"], good["w"])
    assert best_state(tmp_path)["step"] == 2


def test_a_best_caught_being_replaced_is_put_back(tmp_path: Path) -> None:
    save_best_checkpoint(tmp_path, 2, {"w": torch.ones(3)}, {}, {"family": "gpt2"})
    checkpoints = tmp_path / "checkpoints"
    # A crash between moving the old best aside and renaming the new one into place.
    (checkpoints / "best").rename(checkpoints / "best.old")
    (checkpoints / "best.tmp").mkdir()
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best"]
    assert best_state(tmp_path)["step"] == 2


def test_a_rollback_keeps_the_best_measured_before_it(
    python_docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.training.test_divergence import poison

    # Evaluated at every step: steps 1-6, then (rolled back to step 4) steps 5-8 again.
    losses = iter([5.0, 4.0, 3.0, 2.0, 1.0, 1.5, 1.8, 1.7, 1.6, 1.5])
    monkeypatch.setattr(Validation, "run", lambda self, model, raw: {
        "val_loss": (loss := next(losses)), "val_perplexity": math.exp(loss)})  # fmt: skip
    # NaN losses from step 5 at the full learning rate: steps 5 and 6 are skipped, then rollback.
    poison(monkeypatch, lambda trainer, step: step >= 5 and trainer.state.lr_scale == 1.0)
    run_dir = tmp_path / "run"
    extra = ["--eval.every=1", "--checkpoint.every=4", "--train.max_bad_steps=2",
             "--train.on_divergence=rollback", "--train.warmup_steps=2"]  # fmt: skip
    assert pretrain(python_docs_data, run_dir, *extra) == 0
    assert next(losses, None) is None  # ten evaluations: the rollback happened
    # The step-4 checkpoint the run rolled back to recorded best 2.0, but the best on disk is
    # step 5's 1.0 (skipped updates: step 4's finite weights), and nothing after beat it.
    assert best_state(run_dir)["step"] == 5
    assert best_state(run_dir)["eval"]["val_loss"] == 1.0
