"""Build configs from presets, YAML files and `--section.key=value` overrides.

Precedence: dataclass defaults < model preset < YAML < command line. Unknown keys and values of the
wrong type are errors that name the key and what it accepts. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from lmforge.config.model import ModelConfig
from lmforge.config.presets import get_preset
from lmforge.config.schema import RunConfig
from lmforge.errors import LmforgeError

T = TypeVar("T")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['--train.lr=3e-4', '--resume', 'auto'] -> {'train.lr': '3e-4', 'resume': 'auto'}."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or arg == "--":
            raise LmforgeError(
                f"unexpected argument {arg!r}; overrides look like --section.key=value"
            )
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if index + 1 >= len(args) or args[index + 1].startswith("--"):
                raise LmforgeError(f"--{key} needs a value, e.g. --{key}=VALUE")
            index += 1
            value = args[index]
        overrides[key.replace("-", "_")] = value
        index += 1
    return overrides


def _set_nested(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            raise LmforgeError(f"--{dotted}: {part!r} is a value, not a section")
        tree = child
    tree[leaf] = value


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except LmforgeError as error:
                errors.append(str(error))
        raise LmforgeError(errors[0] if errors else f"{key}: got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise LmforgeError(
                f"{key}={value!r} is not valid; choose one of {', '.join(map(str, allowed))}"
            )
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise LmforgeError(
                f"{key} is a section with keys {_field_names(annotation)}, got {value!r}"
            )
        return from_dict(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise LmforgeError(
        f"{key} expects {getattr(annotation, '__name__', annotation)}, got {value!r}"
    )


def _field_names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def from_dict(cls: type[T], values: dict, *, prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict, coercing strings from the command line."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise LmforgeError(
            f"unknown config key {prefix}{unknown[0]}; valid keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {_field_names(cls)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):  # name the missing leaf, e.g. run.dir
                kwargs[name] = from_dict(hints[name], {}, prefix=f"{prefix}{name}.")
                continue
            flag = f"--{prefix}{name}=..."
            raise LmforgeError(f"missing required config value {prefix}{name}; give it as {flag}")
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def read_yaml(path: Path) -> dict:
    """The mapping a YAML config file holds; unreadable files and other values are errors."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise LmforgeError(f"cannot read config {path}: {error}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise LmforgeError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _model_dict(spec: Any) -> dict:
    """A `model:` entry: a preset name, or a mapping with an optional `preset` and overrides."""
    if isinstance(spec, str):
        return to_dict(get_preset(spec))
    if isinstance(spec, dict):
        spec = dict(spec)
        preset = spec.pop("preset", None)
        base = to_dict(get_preset(preset)) if preset else {}
        return _merge(base, spec)
    raise LmforgeError("model must be a preset name or a mapping (with an optional `preset` key)")


def load_run_config(preset_or_yaml: str, overrides: list[str] | dict[str, str]) -> RunConfig:
    """Resolve a preset name or a YAML file plus command-line overrides into a RunConfig (a run or
    checkpoint directory to continue from: `lmforge.run_dir.load_pretraining_config`)."""
    path = Path(preset_or_yaml)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise LmforgeError(f"config file {path} does not exist")
        raw = read_yaml(path)
    else:
        raw = {"model": preset_or_yaml}
    if "model" not in raw:
        raise LmforgeError(f"{preset_or_yaml}: the config names no model (add `model: PRESET`)")
    return run_config_from_tree(raw, overrides)


def run_config_from_tree(raw: dict, overrides: list[str] | dict[str, str]) -> RunConfig:
    """A RunConfig from a nested dict whose `model` is a preset name or a mapping, plus
    overrides."""
    raw = dict(raw, model=_model_dict(raw["model"]))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key, value in overrides.items():
        _set_nested(raw, key, value)
    return from_dict(RunConfig, raw)


def model_config_from_dict(values: dict) -> ModelConfig:
    return from_dict(ModelConfig, values, prefix="model.")


def yaml_text(config: Any) -> str:
    """A config dataclass as YAML, fields in declaration order."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def dump_yaml(config: Any, path: Path) -> None:
    path.write_text(yaml_text(config))


def user_keys(preset_or_yaml: str, overrides: dict[str, str]) -> set[str]:
    """Dotted keys the user set (in the YAML or on the command line), as opposed to defaults."""
    keys = set(overrides)
    path = Path(preset_or_yaml)
    if path.is_file():

        def walk(tree: dict, prefix: str) -> None:
            for key, value in tree.items():
                keys.add(prefix + key)
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")

        walk(read_yaml(path), "")
    return keys
