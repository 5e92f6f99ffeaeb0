"""Configuration: RunConfig sections, loading from presets/YAML/overrides, dumping. No torch."""

from lmforge.config.loading import dump_yaml, from_dict, load_run_config, parse_overrides, to_dict
from lmforge.config.schema import RunConfig

__all__ = ["RunConfig", "dump_yaml", "from_dict", "load_run_config", "parse_overrides", "to_dict"]
