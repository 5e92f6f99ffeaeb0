"""Configs: presets, YAML files and overrides resolve with the documented precedence and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.config.loading import dump_yaml, load_run_config, parse_overrides
from lmforge.models.lm import build_model
from tests.conftest import REPO_ROOT

REQUIRED = ["--run.dir=r", "--data.path=d"]


def test_command_line_overrides_beat_yaml_beat_preset(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: gpt2-tiny, d_model: 128}\ntrain: {lr: 0.01, seq_len: 64}\n")
    config = load_run_config(str(path), REQUIRED + ["--train.lr=3e-4"])
    assert config.model.d_model == 128  # YAML over preset
    assert config.model.num_layers == 4  # preset kept
    assert config.train.lr == 3e-4  # command line over YAML
    assert config.train.seq_len == 64


def test_values_are_coerced_to_the_field_type() -> None:
    config = load_run_config(
        "bloom-tiny",
        REQUIRED
        + [
            "--train.compile=true",
            "--train.micro_batch_size=none",
            "--model.position.kind",
            "rope",
        ],  # fmt: skip
    )
    assert config.train.compile is True
    assert config.train.micro_batch_size is None
    assert config.model.position.kind == "rope"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--train.lrr=1"], "unknown config key train.lrr"),
        (["--train.max_steps=1.5"], "train.max_steps expects int, got '1.5'"),
        (["--train.compile=maybe"], "train.compile expects bool"),
        (["--model.mlp.activation=swish"], "choose one of gelu, gelu_tanh, relu, silu"),
        (["--model.d_model=30"], "divisible by model.num_heads"),
        (["oops"], "overrides look like --section.key=value"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_run_config("gpt2-tiny", REQUIRED + overrides)


def test_missing_required_value_says_how_to_give_it() -> None:
    with pytest.raises(
        ValueError, match=r"missing required config value data\.path; give it as --data\.path"
    ):
        load_run_config("gpt2-tiny", ["--run.dir=r"])


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known presets: gpt2-tiny"):
        load_run_config("gpt3-huge", REQUIRED)


def test_dumped_config_loads_back_identically(tmp_path: Path) -> None:
    config = load_run_config("bloom-tiny", REQUIRED + ["--train.lr=5e-4"])
    dump_yaml(config, tmp_path / "config.yaml")
    assert load_run_config(str(tmp_path / "config.yaml"), {}) == config


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_yaml_loads_and_builds(path: Path) -> None:
    config = load_run_config(str(path), {})
    assert build_model(config.model, device="meta").num_parameters() > 0


def test_parse_overrides_accepts_both_spellings() -> None:
    assert parse_overrides(["--train.lr=1", "--resume", "auto", "--run-dir=x"]) == {
        "train.lr": "1", "resume": "auto", "run_dir": "x"}  # fmt: skip
