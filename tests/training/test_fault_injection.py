"""kill -9 a pretraining run again and again, rerun the same command each time: the result is the
uninterrupted run's, bit for bit; and two processes never train one run directory at once.

Each run is `lmforge pretrain` called in a forked child (torch is imported once, by pytest). The
kills are seeded and land at chosen events rather than chosen times, so the test is the same on a
busy machine: the child SIGKILLs itself at the n-th call of a step, of a metrics row, or of one of
the writes of a checkpoint (after the weights, after the optimizer state, while staging the JSON
files, before the rename, before and after LATEST).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli.main import main
from tests.conftest import TINY_MODEL

FORK = multiprocessing.get_context("fork")
MAX_STEPS = 40


@pytest.fixture(scope="module", autouse=True)
def _imported_once(python_docs_data: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Import what a run imports (torch imports much on first use), here, once, by a run of one
    step: forked children then start without importing."""
    import lmforge.cli.main
    from lmforge.api import pretrain

    lmforge.cli.main.build_parser()
    run = tmp_path_factory.mktemp("imports") / "run"
    argv = _argv(python_docs_data, run, "--train.max_steps=1", "--eval.every=1")
    pretrain("gpt2-tiny", dict(arg[2:].split("=", 1) for arg in argv[2:]))


def _argv(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "pretrain", "gpt2-tiny", f"--data.path={data}", f"--run.dir={run}", "--run.device=cpu",
        "--train.batch_size=4", f"--train.max_steps={MAX_STEPS}", "--train.warmup_steps=5",
        "--checkpoint.every=5", "--checkpoint.keep_last=2", "--eval.every=20",
        "--eval.max_batches=2", *TINY_MODEL, *extra,
    ]  # fmt: skip


def _kill_at_call(owner: object, name: str, count: int) -> None:
    """Make the `count`-th call of `owner.name` (this process) SIGKILL the process first."""
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _hooks() -> dict[str, tuple[object, str, int]]:
    """Kill points: name -> (owner, attribute, largest count to draw)."""
    import lmforge.run_dir
    import lmforge.training.checkpoint
    from lmforge.training.metrics import MetricsWriter
    from lmforge.training.trainer import Trainer

    # The largest counts keep most lives short of their second checkpoint, so that 20 kills fit
    # in one run of MAX_STEPS steps (checkpoint.every=5).
    return {
        "step": (Trainer, "train_step", 6),
        "metrics row": (MetricsWriter, "log", 6),
        # Called once after the weights and once after the optimizer state of a checkpoint.
        "checkpoint file": (lmforge.training.checkpoint, "fsync_file", 3),
        "checkpoint json": (lmforge.training.checkpoint, "write_json", 3),
        # publish_checkpoint: before renaming step-N.tmp, and after writing LATEST.
        "publish": (lmforge.run_dir, "_fsync_dir", 3),
        # LATEST (and config.yaml when it changes).
        "run file": (lmforge.run_dir, "write_text", 2),
    }


def _child(argv: list[str], stderr: str, kill: tuple[str, int] | None, pause: object) -> None:
    torch.set_num_threads(1)
    sys.stderr = open(stderr, "w")  # noqa: SIM115 (the process ends with it)
    import lmforge.training.run

    # The matmul benchmark only feeds the MFU column, and costs seconds per start.
    lmforge.training.run.measure_matmul_peak = lambda *args, **kwargs: 1e12
    if kill is not None:
        owner, name, _ = _hooks()[kill[0]]
        _kill_at_call(owner, name, kill[1])
    if pause is not None:
        _pause_at_first_step(pause)
    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


def _pause_at_first_step(event) -> None:
    from lmforge.training.trainer import Trainer

    def paused(self):
        event.set()
        time.sleep(120)

    Trainer.train_step = paused


def _run(argv: list[str], tmp: Path, kill=None, pause=None) -> tuple[int, str]:
    """Run `lmforge pretrain` in a forked child; its exit code (-9: killed) and stderr."""
    stderr = tmp / f"stderr-{time.monotonic_ns()}"
    child = FORK.Process(target=_child, args=(argv, str(stderr), kill, pause))
    child.start()
    child.join(timeout=120)
    assert child.exitcode is not None, "the child hung"
    return child.exitcode, stderr.read_text()


def _losses(run: Path) -> list[tuple[int, str, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        (row["step"], key, row[key]) for row in rows for key in ("loss", "val_loss") if key in row
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{MAX_STEPS:07d}" / "model.safetensors")


@pytest.fixture(scope="module")
def reference(python_docs_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    code, stderr = _run(_argv(python_docs_data, tmp / "run"), tmp)
    assert code == 0, stderr
    return tmp / "run"


def test_kill_9_at_20_seeded_moments_changes_nothing(
    python_docs_data: Path, reference: Path, tmp_path: Path
) -> None:
    run, argv = tmp_path / "run", _argv(python_docs_data, tmp_path / "run")
    draw = random.Random(13)
    hooks = _hooks()
    # The first kill lands before the first checkpoint: the rerun must not log steps 1-2 twice.
    # The next between the rename of the first checkpoint and its LATEST (the rerun finds no
    # LATEST and takes the newest step-*), then one just after a LATEST; 17 more are drawn.
    kills = [("step", 3), ("run file", 1), ("publish", 2)]
    while len(kills) < 20:
        name = draw.choice(sorted(hooks))
        kills.append((name, draw.randint(1, hooks[name][2])))
    fired = []
    for kill in kills:
        code, stderr = _run(argv, tmp_path, kill=kill)
        assert code in (-signal.SIGKILL, 0), stderr
        if code == 0:
            break
        fired.append(kill)
    assert len(fired) == 20, f"the run finished after {len(fired)} kills: {fired}"
    inside_checkpoints = [kill for kill in fired if kill[0] not in ("step", "metrics row")]
    assert len(inside_checkpoints) >= 8, fired
    code, stderr = _run(argv, tmp_path)
    assert code == 0, stderr
    expected = _losses(reference)
    assert [step for step, key, _ in expected if key == "loss"] == list(range(1, MAX_STEPS + 1))
    assert _losses(run) == expected  # each row once, in order, with the same value
    ours, theirs = _weights(run), _weights(reference)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.suffix in (".tmp", ".old")]
    assert leftovers == []


def test_a_second_process_is_refused_and_a_killed_one_leaves_no_lock(
    python_docs_data: Path, tmp_path: Path
) -> None:
    argv = _argv(python_docs_data, tmp_path / "run", "--train.max_steps=3")
    pause = FORK.Event()
    holder = FORK.Process(target=_child, args=(argv, str(tmp_path / "holder"), None, pause))
    holder.start()
    try:
        assert pause.wait(timeout=120), "the first process never reached its first step"
        code, stderr = _run(argv, tmp_path)
        assert code == 2
        assert stderr.startswith("error: ") and stderr.count("\n") == 1
        assert f"in use by another lmforge process (pid {holder.pid})" in stderr
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    code, stderr = _run(argv, tmp_path)  # the same command again: the kernel freed the lock
    assert code == 0, stderr


def test_resume_from_a_path_of_another_model_writes_nothing(
    python_docs_data: Path, reference: Path, tmp_path: Path
) -> None:
    """Issue 13, point 2: --resume=PATH used to rewrite config.yaml before failing."""
    before = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file() and p.name != ".lock"}
    step = reference / "checkpoints" / f"step-{MAX_STEPS:07d}"
    argv = _argv(python_docs_data, reference, f"--resume={step}")
    argv[1] = "bloom-tiny"
    code, stderr = _run(argv, tmp_path)
    assert code == 2 and "holds a different run (model." in stderr, stderr
    after = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_an_empty_config_yaml_is_one_line(python_docs_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")
    code, stderr = _run(_argv(python_docs_data, run), tmp_path)
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: {run / 'config.yaml'} is empty or damaged")
