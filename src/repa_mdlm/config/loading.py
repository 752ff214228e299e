"""From a YAML file to a checked ``Config``: the YAML, the schema check, and the dict→dataclass builder.

``load_config`` reads the file, ``validate_schema`` makes the check Snakemake's validate() makes
(``workflow/schemas/config.schema.yaml``: types, ranges, names), and ``build_section`` turns the
mapping into the typed sections of ``repa_mdlm.config`` (``Config.from_dict`` calls it before the
semantic checks). Like the config module, it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

from . import Config, ConfigError


def _section_type(cls, name: str):
    """The dataclass a field holds (or holds a list of), read from its annotation; None for a value."""
    hint = typing.get_type_hints(cls)[name]
    inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
    return inner if dataclasses.is_dataclass(inner) else None


def build_section(cls, raw: Any, prefix: str):
    """Build a (nested) dataclass from a dict; unknown keys are errors naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown key; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        sub = _section_type(cls, name)
        if sub is not None and typing.get_origin(typing.get_type_hints(cls)[name]) is list:
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected a list of {name}")
            kwargs[name] = [build_section(sub, v, f"{key}[{i}]") for i, v in enumerate(value)]
        elif sub is not None:
            kwargs[name] = build_section(sub, value, key)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                base_dir: str | os.PathLike = ".") -> Config:
    """Load YAML, check it against the schema, then build and check the typed config.

    Relative corpus paths are taken from ``base_dir`` (where Snakemake runs: the repo root).
    """
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
    raw.update(overrides or {})
    try:
        validate_schema(raw)
        return Config.from_dict(raw, base_dir=base_dir)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


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
