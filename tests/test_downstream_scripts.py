"""bench/downstream/{pretrain,finetune}.sh and results.py in their smoke mode (SMOKE=1: a 100 KB
corpus, width-32 models, a few steps): one model of each family pretrained, fine-tuned from both
inits on the tasks issue 12 added, and reported; and both scripts skip what is finished.

Not covered here (each a few more processes, at 3-40 s each): BERT and GPT-2 through the scripts,
T5 beyond SST-2, the encoders' SST-2/CoNLL/SQuAD, the decoders' SST-2, TREC and zero-shot,
Multi30k and SciTLDR (the same `run` helper with other data), and MiniLM (it downloads).
`SMOKE=1 bash bench/downstream/finetune.sh bert roberta gpt2 bloom t5 bart OUT` runs them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA

SCRIPTS = REPO_ROOT / "bench" / "downstream"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, tasks: str = "") -> str:
    if shutil.which("lmforge") is None:
        pytest.skip("the lmforge command is not on PATH (pip install -e .)")
    env = {**os.environ, "SMOKE": "1", "SHARED_DATA": str(SHARED_DATA), "TASKS": tasks,
           "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = ["bash", str(SCRIPTS / script), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"{SHARED_DATA} not found: the shared datasets sit beside the repository only in CI"
        )
    out = tmp_path_factory.mktemp("downstream")
    _run("pretrain.sh", "roberta", "bloom", "bart", str(out))
    return out


def test_pretraining_writes_each_family_and_skips_finished_runs(pretrained: Path) -> None:
    for model, objective in (("roberta", "mlm"), ("bloom", "clm"), ("bart", "bart_denoising")):
        assert (pretrained / model / "checkpoints" / "step-0000004").is_dir(), model
        assert f"kind: {objective}" in (pretrained / model / "config.yaml").read_text()
    # RoBERTa and BLOOM share GPT-2's BPE tokenizer and data; BART's vocabulary also saw German.
    assert {p.name for p in pretrained.glob("*-data")} == {"gpt2-data", "bart-data"}
    assert "placement: pre" in (pretrained / "roberta" / "config.yaml").read_text()
    # Resumable: a second call finds everything done and starts no lmforge process.
    assert _run("pretrain.sh", "roberta", "bloom", "bart", str(pretrained)).strip() == ""


def test_finetuning_both_inits_and_the_results_table(pretrained: Path) -> None:
    out = str(pretrained)
    _run("finetune.sh", "roberta", out, tasks="trec")
    _run("finetune.sh", "bloom", out, tasks="generation")
    _run("finetune.sh", "bart", out, tasks="dialogsum squadgen")
    finetune = pretrained / "finetune"
    for name in ("trec-roberta", "dialogsum-bart", "squadgen-bart"):
        for init in ("pretrained", "random"):
            assert (finetune / f"{name}-{init}-lr1e-3" / "metrics.json").is_file(), (name, init)
    # DialogSum's test set, with its three references as one list field.
    assert '"summary": [' in (pretrained / "dialogsum.test.jsonl").read_text().splitlines()[0]
    for init in ("pretrained", "random"):
        assert (finetune / f"generation-bloom-{init}" / "samples.txt").read_text().strip()

    # Finished runs are skipped: nothing is trained again.
    assert "==" not in _run("finetune.sh", "bart", out, tasks="dialogsum squadgen")

    table = subprocess.run(
        [sys.executable, str(SCRIPTS / "results.py"), out],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for row in ("| roberta |", "| bloom |", "| bart |", "| TREC accuracy (6 classes) | roberta |",
                "| DialogSum ROUGE-L | bart |",
                "| SQuAD v1.1 generative EM / F1 | bart | validation |"):  # fmt: skip
        assert row in table, row
    assert "| 1e-3 / 1e-3 |" in table
    # Generation: bits per byte of the pretrained run against the untrained one.
    bloom_bpb = next(line for line in table.splitlines() if line.startswith("| bloom | ") and
                     "samples.txt" in line)  # fmt: skip
    assert len(bloom_bpb.split("|")) == 7


def test_t5_adafactor_grid_point(pretrained: Path) -> None:
    out = str(pretrained)
    _run("pretrain.sh", "t5", out)
    _run("finetune.sh", "t5", out, tasks="sst2")
    finetune = pretrained / "finetune"
    for init in ("pretrained", "random"):
        assert (finetune / f"sst2-t5-{init}-lr1e-3-adafactor" / "metrics.json").is_file()
    config = (finetune / "sst2-t5-random-lr1e-3-adafactor" / "config.yaml").read_text()
    assert "optimizer: adafactor" in config
    table = subprocess.run(
        [sys.executable, str(SCRIPTS / "results.py"), out],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| 1e-3 adafactor / 1e-3 adafactor |" in table
