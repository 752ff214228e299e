"""Typed, documented configuration: one place for defaults and semantic checks.

The YAML config is first validated against ``workflow/schemas/config.schema.yaml`` (types,
ranges), then ``Config.from_dict`` builds these dataclasses (``config.loading``) and runs the
checks a schema cannot express. Each section checks itself (``check``, errors naming the full
key); ``Config.check`` adds the checks across sections (layer within the student's depth, ...).
"(paper: ...)" in a field's docstring is the paper's value; config.yaml sets every one of them.

The schema of the typed config lives in this package, one module per theme, and every name is
importable from ``repa_mdlm.config``:

- ``base``: ``ConfigError``, the choices (``Literal``), ``field_errors``, ``choice_fields``, ``compile_mode``;
- ``data``: the corpus and tokenizer sections;
- ``model``: the student, the diffusion schedule and its curriculum;
- ``training``: the train section and each job's resources;
- ``repa``: the teachers and the REPA grid;
- ``evaluation``: the test evaluation (zero-shot sets) and the generative evaluation (judge);
- ``halving``: successive halving over the REPA configurations, in no job spec;
- ``tracking``: experiment tracking (TensorBoard, W&B), in no job spec;
- beside the sections: ``loading`` (YAML + schema -> Config), ``locations`` (hub ids, folders, results_dir
  safety), ``specs`` (each job's slice of the config), ``sampling`` (the sampler's defaults),
  ``packaged`` (teachers a package ships);
- here: the root ``Config`` (construction, the grid of cells, checks across sections) and ``Cell``.

This package imports nothing heavy so the Snakefile can use it at parse time.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .base import (
    BASELINE,
    CHOICE_NOTES,
    COMPILE_MODES,
    MAX_REPA_WEIGHT,
    TEACHER_NAME,
    TOKENWISE_TAG,
    AttnImplementation,
    CompileMode,
    ConfigError,
    CorpusSource,
    FeatureMode,
    LrSchedule,
    Optimizer,
    Pooling,
    Precision,
    RepaLoss,
    TrackingBackend,
    WandbMode,
    build_section,
    choice_fields,
    compile_mode,
    field_errors,
    weight_text,
)
from .data import CorpusConfig, TokenizerConfig, vocabulary_errors
from .evaluation import EvaluateConfig, GenerativeConfig, JudgeConfig, ZeroShotSet, standard_error_errors
from .halving import HalvingConfig, rung_steps
from .model import CurriculumConfig, DiffusionConfig, StudentConfig
from .repa import ARM_KEYS, Arm, RepaConfig, RepaVariant, TeacherConfig, inherit_twin_settings
from .sampling import SamplerSettings
from .tracking import TrackingConfig
from .training import JobResources, ResourcesConfig, TrainConfig

__all__ = [
    "BASELINE", "CHOICE_NOTES", "COMPILE_MODES", "MAX_REPA_WEIGHT", "TEACHER_NAME",
    "AttnImplementation", "CompileMode", "CorpusSource", "FeatureMode", "LrSchedule", "Optimizer", "Pooling",
    "Precision", "RepaLoss", "TrackingBackend", "WandbMode",
    "ConfigError", "choice_fields", "compile_mode", "field_errors",
    "CorpusConfig", "TokenizerConfig", "StudentConfig", "CurriculumConfig", "DiffusionConfig", "TrainConfig",
    "JobResources", "ResourcesConfig", "TeacherConfig", "RepaConfig", "RepaVariant", "Arm", "ARM_KEYS", "ZeroShotSet", "EvaluateConfig",
    "JudgeConfig", "GenerativeConfig", "HalvingConfig", "TrackingConfig", "SamplerSettings",
    "Config", "Cell", "ARM_SEPARATOR", "TOKENWISE_TAG", "arm_label", "feature_source", "cell_data_seed", "cell_name_errors", "weight_text",
]


@dataclass
class Config:
    results_dir: str = "results"
    """Where every output goes ("~" is the home folder); never a system folder or the project's."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of every cell: initialisation, masks and (unless train.data_seed) data order (paper: one)."""
    teacher_features: FeatureMode = "cached"
    """cached: each teacher's features computed once per split; online: a teacher forward every step
    (the paper's timing)."""
    seq_len: int = 256
    """Tokens per packed training sequence (paper: 256)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """The text and its train/val/test splits."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The student's tokenizer."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """The diffusion model's architecture."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """The MDLM noise schedule and its curriculum."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and its speed settings."""
    repa: RepaConfig = field(default_factory=RepaConfig)
    """The grid: teachers x layers x weights, and the alignment loss."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """The test ELBO perplexity of each cell."""
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    """Samples of each cell and their generative perplexity under a judge."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """What each job asks the scheduler for."""
    halving: HalvingConfig = field(default_factory=HalvingConfig)
    """Successive halving over the REPA configurations (off: the full grid, as in the paper); in no job spec."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Experiment tracking (TensorBoard, W&B): what is logged, never what is computed, so it is in no job spec."""

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str | os.PathLike = ".", job_spec: bool = False) -> "Config":
        """job_spec: a job's slice of a config that was checked whole before any job (config.*_spec): it
        leaves results_dir and the rest of the grid out, so the checks of the whole sweep are not made again."""
        cfg = build_section(cls, raw, "")
        cfg.results_dir = os.path.expanduser(cfg.results_dir)  # "~/runs" means the home folder, as in a shell
        for teacher in cfg.repa.teachers:
            teacher.name_or_path = teacher.name_or_path.replace("{results_dir}", cfg.results_dir)
        if not job_spec:  # a job's slice carries its twin's settings already taken from the teacher
            entries = ((raw.get("repa") or {}).get("teachers") or []) if isinstance(raw, dict) else []
            twin_errors = inherit_twin_settings(cfg.repa.teachers, [set(e) if isinstance(e, dict) else set()
                                                                    for e in entries])
            if twin_errors:
                raise ConfigError("invalid config:\n  - " + "\n  - ".join(twin_errors))
        cfg.check(base_dir, whole_config=not job_spec)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- the grid -----------------------------------------------------
    def teacher(self, name: str) -> TeacherConfig:
        """The teacher of a name, or of a cell's teacher label (teacher+tag: the teacher's entry)."""
        name = name.partition(ARM_SEPARATOR)[0]
        for t in self.repa.teachers:
            if t.name == name:
                return t
        raise ConfigError(f"repa.teachers: no teacher named {name!r}; known: {[t.name for t in self.repa.teachers]}")

    def cells(self) -> list["Cell"]:
        cells = [Cell(BASELINE, None, None, s) for s in self.seeds]
        for arm, teachers, layers, weights in self.repa.arms():
            for t in teachers:
                for layer in layers:
                    for w in weights:
                        for s in self.seeds:
                            cells.append(Cell(arm_label(t.name, arm.tag), layer, float(w), s))
        return cells

    def arm(self, cell: "Cell") -> Arm:
        """How a REPA cell aligns (its teacher label's tag)."""
        return self.repa.arm_of(cell.arm_tag)

    def require_cell(self, cell: "Cell") -> "Cell":
        """cell, if it is one of this config's cells (a job's spec holds exactly its own): a cell name
        given beside another cell's spec would train one setting and record the other."""
        if cell.name not in {c.name for c in self.cells()}:  # names read back exactly (cell_name_errors)
            raise ConfigError(f"cell {cell.name} is not in this config's grid (its cells: "
                              f"{', '.join(c.name for c in self.cells()[:6])}); pass the spec made for it "
                              "(specs.cell_spec), as the workflow does")
        return cell

    # ---- checks a schema cannot express --------------------------------
    def check(self, base_dir: str | os.PathLike = ".", whole_config: bool = True) -> None:
        """Every section's own checks, then those across sections; whole_config adds the grid's and
        where the workflow may write (see from_dict). Raises one ConfigError listing every error."""
        from .locations import write_location_errors

        errors = field_errors(self, "")
        errors += self.corpus.check(base_dir)
        for section in (self.tokenizer, self.student, self.diffusion, self.train, self.repa, self.generative,
                        self.resources, self.halving, self.tracking):
            errors += section.check()
        errors += self.evaluate.check(base_dir=base_dir)
        depth = self.student.num_hidden_layers
        errors += [f"repa.layers[{i}] = {layer}: the student has {depth} layers (student.num_hidden_layers); "
                   f"use a layer in 1..{depth}" for i, layer in enumerate(self.repa.layers) if not 1 <= layer <= depth]
        errors += [f"repa.variants[{v}].layers[{i}] = {layer}: the student has {depth} layers "
                   f"(student.num_hidden_layers); use a layer in 1..{depth}"
                   for v, variant in enumerate(self.repa.variants) for i, layer in enumerate(variant.layers or [])
                   if not (isinstance(layer, int) and 1 <= layer <= depth)]
        for key, length in (("seq_len", self.seq_len), ("generative.seq_len", self.generative.seq_len or 0)):
            if length > self.student.max_position_embeddings:
                errors.append(f"{key} = {length} exceeds student.max_position_embeddings = "
                              f"{self.student.max_position_embeddings}")
        if whole_config and self.repa.teachers and not (self.repa.layers and self.repa.weights):
            empty = "repa.layers" if not self.repa.layers else "repa.weights"
            errors.append(f"{empty} is empty while repa.teachers lists {len(self.repa.teachers)}: no REPA cell would "
                          f"run; give at least one, or set repa.teachers: [] for a baseline-only sweep")
        if whole_config and self.halving.enabled and not self.halving.check():
            try:
                rung_steps(self.halving.rungs, self.train.steps, self.train.val_every)
            except ConfigError as error:
                errors.append(str(error))
        if whole_config:  # facts of the whole sweep: a job's slice leaves the tokenizer and corpus out
            errors += vocabulary_errors(self) + standard_error_errors(self, base_dir)
            errors += write_location_errors(self, base_dir)
            if not errors:  # names read values that the checks above found valid
                errors += cell_name_errors(self.cells())
        if errors:
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))



@dataclass(frozen=True)
class Cell:
    """One training run of the grid: the baseline, or teacher x layer x weight; times seed."""

    teacher: str
    """A teacher's name, or BASELINE for the run without REPA."""
    layer: int | None
    """The student block aligned (repa.layers); None for the baseline."""
    weight: float | None
    """The REPA loss weight (repa.weights); None for the baseline."""
    seed: int
    """One of the config's seeds."""

    @property
    def is_baseline(self) -> bool:
        return self.teacher == BASELINE

    @property
    def teacher_name(self) -> str:
        """The teacher's entry in repa.teachers (the label without its arm's tag)."""
        return self.teacher.partition(ARM_SEPARATOR)[0]

    @property
    def arm_tag(self) -> str:
        """The tag of the cell's arm ('' for the paper's pooled, linear, constant alignment)."""
        return self.teacher.partition(ARM_SEPARATOR)[2]

    @property
    def name(self) -> str:
        if self.is_baseline:
            return f"{BASELINE}_s{self.seed}"
        return f"{self.teacher}_L{self.layer}_w{weight_text(self.weight)}_s{self.seed}"

    @classmethod
    def parse(cls, name: str) -> "Cell":
        m = re.fullmatch(rf"{BASELINE}_s(\d+)", name)
        if m:
            return cls(BASELINE, None, None, int(m.group(1)))
        m = re.fullmatch(r"([a-z0-9][a-z0-9.\-]*(?:\+[a-z0-9][a-z0-9.\-]*)?)_L(\d+)_w(\d+\.\d+)_s(\d+)", name)
        if not m:
            raise ConfigError(f"{name!r} is not a cell name (expected baseline_s<seed> or "
                              "<teacher>[+<arm>]_L<layer>_w<weight>_s<seed>)")
        return cls(m.group(1), int(m.group(2)), float(m.group(3)), int(m.group(4)))



ARM_SEPARATOR = "+"
"""Between a teacher's name and its arm's tag in a cell's teacher label (e5-pt+tok-mlp256)."""


def arm_label(teacher: str, tag: str) -> str:
    """A cell's teacher label: the teacher's name, with its arm's tag unless the arm is the paper's."""
    return f"{teacher}{ARM_SEPARATOR}{tag}" if tag else teacher


def feature_source(label: str) -> str:
    """Which feature cache a cell of this teacher label reads: the teacher's pooled one (its name) or its
    token-wise one (name+tokenwise); read_cache_costs keys each cache's cost the same way."""
    name, _, tag = label.partition(ARM_SEPARATOR)
    return f"{name}{ARM_SEPARATOR}tokenwise" if tag.split("-")[0] == TOKENWISE_TAG else name


def cell_name_errors(cells: list[Cell]) -> list[str]:
    """A cell's name must read back to exactly its values, and no two cells may share one: the name is
    the run folder, so a collision would train one cell and drop the others silently."""
    errors, seen = [], {}
    for cell in cells:
        try:
            parsed = Cell.parse(cell.name)
        except ConfigError as e:
            errors.append(f"{cell}: {e}")
            continue
        if parsed != cell:
            errors.append(f"cell {cell.name!r} reads back as {parsed}, not {cell}: use values the name spells "
                          "exactly (an integer layer and seed, a decimal weight)")
        if cell.name in seen and seen[cell.name] != cell:
            errors.append(f"{seen[cell.name]} and {cell} would both be named {cell.name!r}: make the values in "
                          "repa.layers, repa.weights and seeds distinct")
        seen.setdefault(cell.name, cell)
    return errors


def cell_data_seed(cfg: Config, cell: Cell) -> int:
    """The data order a cell reads: its own seed, unless train.data_seed shares one order across seeds."""
    return cell.seed if cfg.train.data_seed is None else cfg.train.data_seed
