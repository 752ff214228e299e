"""What each Snakemake job is given of the config, and so what makes it re-run.

Each job gets only the config it depends on (its spec, passed as a param), so Snakemake's params
trigger re-runs exactly the jobs a change affects: adding a teacher never retrains the others, a
key added in a later version never re-runs a finished sweep, and speed-only settings travel as
integer resources, which never trigger a re-run. tests/test_pins.py pins every spec of the
three configs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import (
    COMPILE_MODES,
    Cell,
    Config,
    CorpusConfig,
    StudentConfig,
    TeacherConfig,
    TokenizerConfig,
    TrainConfig,
    cell_data_seed,
    compile_mode,
)


def data_spec(cfg: Config) -> dict[str, Any]:
    return {"seq_len": cfg.seq_len, "corpus": spec_dict(cfg.corpus), "tokenizer": spec_dict(cfg.tokenizer)}


KEYS_ADDED_LATER = {
    TeacherConfig: {"convert_from": None, "text_prefix": "", "revision": None, "control_of": None},
    TokenizerConfig: {"revision": None},
    CorpusConfig: {"revision": None},
    StudentConfig: {"initializer_range": 0.02},
}
"""Keys added after sweeps were run: left out of specs at their defaults, so an upgrade never makes
Snakemake's params trigger re-run the data, teachers and cells whose inputs did not change."""


def spec_dict(section) -> dict[str, Any]:
    """A config section as it enters a job's spec: keys added later are left out at their defaults."""
    d = dataclasses.asdict(section)
    for key, default in KEYS_ADDED_LATER.get(type(section), {}).items():
        if d.get(key) == default:
            d.pop(key)
    return d


def teacher_spec(cfg: Config, teacher: str, alignment: str = "pooled") -> dict[str, Any]:
    """A teacher's features job: the teacher, the sequence length, and token-wise (span) features
    where `alignment` is tokenwise (pooled ones are as before arms)."""
    repa = {"layers": [], "weights": [], "teachers": [spec_dict(cfg.teacher(teacher))]}
    if alignment != "pooled":
        repa["alignment"] = alignment
    return {"seq_len": cfg.seq_len, "repa": repa}


TWIN_SOURCE_KEYS = ("name", "name_or_path", "revision", "trust_remote_code", "convert_from")
"""What a twin's build reads of its teacher: where its architecture and tokenizer are (a teacher's
speed settings, e.g. batch_size, must not rebuild its twin and retrain the twin's cells)."""


def build_teacher_spec(cfg: Config, teacher: str) -> dict[str, Any]:
    """teacher_spec, plus where the teacher a twin (control_of) copies keeps its architecture and tokenizer."""
    spec = teacher_spec(cfg, teacher)
    source = cfg.teacher(teacher).control_of
    if source:
        spec["repa"]["teachers"].append({k: v for k, v in spec_dict(cfg.teacher(source)).items()
                                         if k in TWIN_SOURCE_KEYS})
    return spec


THROUGHPUT_ONLY_TRAIN_KEYS = ("prefetch_batches", "activation_checkpointing", "compile")
"""train.* settings that change speed or memory but not the result: they are left out of a
cell's spec, so toggling them never makes Snakemake re-run finished cells."""


def throughput_setting_codes(train: TrainConfig) -> dict[str, int]:
    """The speed-only settings as integers: Snakemake resources, which never trigger a re-run."""
    return {key: COMPILE_MODES.index(compile_mode(train.compile)) if key == "compile" else int(getattr(train, key))
            for key in THROUGHPUT_ONLY_TRAIN_KEYS}


def apply_throughput_setting_code(train: TrainConfig, key: str, code: int) -> None:
    """The inverse of throughput_setting_codes, for one key a job was given on its command line."""
    value = compile_mode(code) if key == "compile" else type(getattr(train, key))(code)
    setattr(train, key, value)


NO_REPA = {"layers": [], "weights": [], "teachers": []}
"""The repa section of a job that reads no teacher: the default grid's layers must not be checked
against a student shape the job was not given."""


def evaluation_spec(cfg: Config) -> dict[str, Any]:
    """The evaluate section as a cell sees it: its zero-shot sets are scored by jobs of their own."""
    return {k: v for k, v in dataclasses.asdict(cfg.evaluate).items() if k != "extra_test_sets"}


def zero_shot_data_spec(cfg: Config, name: str) -> dict[str, Any]:
    """Tokenizing one zero-shot set with the student's tokenizer: its corpus and the sequence length."""
    test_set = next(s for s in cfg.evaluate.extra_test_sets if s.name == name)
    return {"seq_len": cfg.seq_len, "corpus": spec_dict(test_set.corpus)}


def zero_shot_spec(cfg: Config) -> dict[str, Any]:
    """Scoring a cell on a zero-shot set: the same Monte Carlo settings as its test ELBO."""
    return {"seq_len": cfg.seq_len, "diffusion": dataclasses.asdict(cfg.diffusion), "repa": NO_REPA,
            "train": {"precision": cfg.train.precision}, "evaluate": evaluation_spec(cfg)}


def cell_spec(cfg: Config, cell: Cell) -> dict[str, Any]:
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in THROUGHPUT_ONLY_TRAIN_KEYS}
    train["data_seed"] = cell_data_seed(cfg, cell)
    spec = {
        "seq_len": cfg.seq_len,
        "student": spec_dict(cfg.student),
        "diffusion": dataclasses.asdict(cfg.diffusion),
        "train": train,
        "evaluate": evaluation_spec(cfg),
        "seeds": [cell.seed],
        "repa": NO_REPA,
    }
    if not cell.is_baseline:
        spec["teacher_features"] = cfg.teacher_features
        arm = cfg.arm(cell).spec()
        spec["repa"] = {"layers": [cell.layer], "weights": [cell.weight], "loss": arm.pop("loss"),
                        "projection_bias": cfg.repa.projection_bias,
                        "teachers": [spec_dict(cfg.teacher(cell.teacher))], **arm}
    return spec


def vouched_teacher_settings(teacher) -> dict[str, Any]:
    """A teacher's settings as a feature cache or a checkpoint vouches for them. A teacher the workflow
    builds (init_from_config, convert_from, control_of) is what its build settings say; its folder
    (name_or_path, inside results_dir) is left out, so a moved or copied sweep keeps its caches,
    checkpoints and finished cells."""
    settings = spec_dict(teacher)
    if teacher.built_by_workflow:
        settings.pop("name_or_path", None)
    return settings


def vouched_cell_spec(cfg: Config, cell: Cell) -> dict[str, Any]:
    """cell_spec as a checkpoint and train_summary.json's trained_on vouch for it: the same settings, with
    a built teacher's folder left out (vouched_teacher_settings). Snakemake's params keep cell_spec."""
    spec = cell_spec(cfg, cell)
    if not cell.is_baseline:
        spec["repa"]["teachers"] = [vouched_teacher_settings(cfg.teacher(cell.teacher))]
    return spec


def judge_spec(cfg: Config) -> dict[str, Any]:
    """The trained judge's job: the student's shape (the judge copies it) and the judge settings."""
    return {"student": spec_dict(cfg.student), "repa": NO_REPA,
            "generative": {"judge": dataclasses.asdict(cfg.generative.judge)}}


def generative_spec(cfg: Config) -> dict[str, Any]:
    """A cell's generative evaluation: the sampler's settings, the schedule's eps and the judge.
    The cell's own training is an input file, not part of this spec."""
    return {"seq_len": cfg.seq_len, "diffusion": dataclasses.asdict(cfg.diffusion), "repa": NO_REPA,
            "generative": dataclasses.asdict(cfg.generative)}
