"""Presets: each carries its paper's pretraining objective, which objective.kind still overrides,
and configs written before the field existed keep loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lmforge.cli.main import main
from lmforge.config.loading import load_run_config, model_config_from_dict, to_dict
from lmforge.config.presets import PRESETS, get_preset
from lmforge.config.schema import ObjectiveSection
from lmforge.errors import LmforgeError
from lmforge.objectives.base import resolve_objective_kind
from tests.conftest import TINY_MODEL

REQUIRED = ["--run.dir=r", "--data.path=d"]
PAPER_OBJECTIVE = {"gpt2": "clm", "bloom": "clm", "llama": "clm", "smollm": "clm",
                   "tinyllama": "clm", "bert": "mlm", "roberta": "mlm",
                   "t5": "span_corruption", "bart": "bart_denoising"}  # fmt: skip
"""Preset name prefix -> the objective its model type was pretrained with."""


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_to_its_papers_objective(name: str) -> None:
    kind = resolve_objective_kind(ObjectiveSection(), get_preset(name))
    assert kind == PAPER_OBJECTIVE[name.split("-")[0]]


@pytest.mark.parametrize("name", ["t5-tiny", "bart-tiny"])
def test_objective_kind_on_the_command_line_overrides_the_preset(name: str) -> None:
    other = "bart_denoising" if name.startswith("t5") else "span_corruption"
    config = load_run_config(name, REQUIRED + [f"--objective.kind={other}"])
    assert resolve_objective_kind(config.objective, config.model) == other


def test_encoder_decoder_without_a_default_objective_is_refused() -> None:
    config = load_run_config("t5-tiny", REQUIRED + ["--model.default_objective=none"])
    with pytest.raises(LmforgeError, match="no default objective; add --objective.kind="):
        resolve_objective_kind(config.objective, config.model)


def test_model_config_written_before_default_objective_still_loads() -> None:
    values = to_dict(get_preset("t5-tiny"))
    del values["default_objective"]  # as in the config.yaml of a run made before the field
    config = model_config_from_dict(values)
    assert config == dataclasses.replace(get_preset("t5-tiny"), default_objective=None)


@pytest.mark.parametrize(
    ("preset", "data_fixture", "expected"),
    [("t5-tiny", "python_docs_unigram_data", "span_corruption"),  # needs sentinel tokens
     ("bart-tiny", "python_docs_data", "bart_denoising")],
)  # fmt: skip
def test_pretrain_without_objective_kind_writes_the_presets_objective(
    preset: str, data_fixture: str, expected: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    data = request.getfixturevalue(data_fixture)
    run_dir = tmp_path / "run"
    argv = ["pretrain", preset, f"--data.path={data}", f"--run.dir={run_dir}", *TINY_MODEL,
            "--train.max_steps=2", "--train.batch_size=2", "--eval.every=0"]  # fmt: skip
    assert main(argv) == 0
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["objective"]["kind"] == expected
