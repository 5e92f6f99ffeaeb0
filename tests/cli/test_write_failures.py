"""Writes the file system refuses (disk full, file size limit, permission denied): one `error:` line
naming what was being written and what was left intact, exit 2, never a traceback; anything else
that goes wrong keeps its traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.errors import write_failure_errno
from tests.cli.test_bad_input import pretrain, run_cli
from tests.conftest import REPO_ROOT

# Runs the CLI with a file size limit: a write past it fails with EFBIG (SIGXFSZ, which would
# kill the process instead, is ignored), as a full disk fails with ENOSPC.
_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from lmforge.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def test_file_size_limit_during_a_checkpoint_is_one_line(python_docs_data: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    # keep_best off: the best weights, written first (at the last evaluation), would fail first.
    argv = pretrain(python_docs_data, run_dir, "--train.max_steps=1", "--checkpoint.every=1",
                    "--checkpoint.keep_best=false")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # 60 kB: config.yaml, the tokenizer and metrics.jsonl fit, the model weights (170 kB) do not.
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, "60000", *argv],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith(f"error: cannot write {run_dir}/checkpoints/step-0000001: ")
    assert "File too large" in lines[-1] and "no checkpoint was complete yet" in lines[-1]
    assert list((run_dir / "checkpoints").iterdir()) == []  # the partial checkpoint is removed


def test_refused_checkpoint_names_the_intact_one(python_docs_data: Path, tmp_path: Path, capsys):
    """Permission denied while writing step 2: the line says step 1 is intact, and it is."""
    import lmforge.training.checkpoint as checkpoint

    run_dir = tmp_path / "run"
    no_best = "--checkpoint.keep_best=false"  # its write would be refused first
    first = pretrain(python_docs_data, run_dir, "--train.max_steps=1", "--checkpoint.every=1",
                     no_best)  # fmt: skip
    assert main(first) == 0

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "save_file", refuse)
        argv = pretrain(python_docs_data, run_dir, "--checkpoint.every=1", no_best)  # 2 steps
        code, line = run_cli(argv, capsys)
    assert code == 2
    assert line.startswith(f"error: cannot write {run_dir}/checkpoints/step-0000002: Permission")
    assert "the last complete checkpoint step-0000001 is intact" in line
    assert (run_dir / "checkpoints" / "LATEST").read_text().strip() == "step-0000001"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["LATEST", "step-0000001"]


def test_refused_write_elsewhere_names_the_open_file(
    python_docs_data: Path, tmp_path: Path, capsys
):
    """A plain Python write error carries no file name; the handler finds the file the failing
    frame had open (here config.yaml, the first file a run writes)."""

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        code, line = run_cli(pretrain(python_docs_data, tmp_path / "run"), capsys)
    assert code == 2
    assert line.startswith(f"error: cannot write {tmp_path / 'run' / 'config.yaml'}")
    assert "No space left on device" in line


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (PermissionError(errno.EACCES, "Permission denied"), errno.EACCES),
        (RuntimeError("Error while serializing: I/O error: File too large (os error 27)"), 27),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 0),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), None),
        (RuntimeError("I/O error: No such file or directory (os error 2)"), None),
        (RuntimeError("shape mismatch"), None),
        (KeyError("disk"), None),
    ],
)
def test_only_refused_writes_are_recognised(error: BaseException, expected: int | None):
    assert write_failure_errno(error) == expected


def test_other_errors_keep_their_traceback(monkeypatch):
    import lmforge.cli.plot_cmd as plot_cmd

    def bug(args):
        raise OSError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(plot_cmd, "run", bug)  # registered when main builds its parser
    with pytest.raises(FileNotFoundError):
        main(["plot", "somewhere"])


def test_permission_denied_names_the_file(monkeypatch, capsys):
    """A permission error (met reading as well as writing) names the file and the fix."""
    import lmforge.cli.plot_cmd as plot_cmd

    def refuse(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/runs/a/metrics.jsonl")

    monkeypatch.setattr(plot_cmd, "run", refuse)
    code, line = run_cli(["plot", "/runs/a"], capsys)
    assert code == 2
    assert line.startswith("error: /runs/a/metrics.jsonl: Permission denied; fix the permissions")
