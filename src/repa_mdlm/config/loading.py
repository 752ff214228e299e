"""From a YAML file to a checked ``Config``: the YAML, the schema check, and the dict→dataclass builder.

``load_config`` reads the file, ``validate_schema`` makes the check Snakemake's validate() makes
(``workflow/schemas/config.schema.yaml``: types, ranges, names), and ``build_section`` turns the
mapping into the typed sections of ``repa_mdlm.config`` (``Config.from_dict`` calls it before the
semantic checks). Like the config module, it imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import Config
from .base import ConfigError


def load_config(path: str | os.PathLike | list, overrides: dict[str, Any] | None = None,
                base_dir: str | os.PathLike = ".") -> Config:
    """Load YAML, check it against the schema, then build and check the typed config.

    path: a config file, or several merged in order, each into the one before as Snakemake merges its
    --configfile list (e.g. config.yaml config/halving-on.yaml). Relative corpus paths are taken from
    ``base_dir`` (where Snakemake runs: the repo root).
    """
    if isinstance(path, (list, tuple)):
        raw = {}
        for one in path:
            _merge(raw, _read_yaml(one))
        raw.update(overrides or {})
        return _checked(raw, " + ".join(str(p) for p in path), base_dir)
    raw = _read_yaml(path)
    raw.update(overrides or {})
    return _checked(raw, path, base_dir)


def _merge(into: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _checked(raw: dict, path, base_dir) -> Config:
    try:
        validate_schema(raw)
        return Config.from_dict(raw, base_dir=base_dir)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _read_yaml(path) -> dict:
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (config.yaml is the paper's; config/demo.yaml the "
                          "offline demo)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (results_dir:, corpus:, ...), "
                          f"not a {type(raw).__name__}")
    return raw


def schema_path() -> Path:
    return Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


def validate_schema(raw: dict[str, Any]) -> None:
    """The check Snakemake's validate() makes (types, ranges, names), with every error listed.

    Defaults live in the dataclasses of ``repa_mdlm.config``, not in the schema, so they have one home.
    """
    import jsonschema
    import yaml

    with open(schema_path()) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        def short(message: str) -> str:  # a message that quotes a whole section would bury the key
            return message if len(message) <= 160 else message[:150] + " [...]"

        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or 'config'}: {short(e.message)}" for e in errors]
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(lines))
