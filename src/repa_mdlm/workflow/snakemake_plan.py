"""What the rules of workflow/rules/*.smk compute from the config: the files a job reads, its threads and
scheduler requests, and the files the report rules declare. The .smk files keep only the rules, which
call these.

It imports only the config and layout (no torch), since Snakemake imports it on every parse. `report`
below is Snakemake's report() flag, passed in by the rule file that declares the outputs: Snakemake
resolves each caption ("../report/<name>.rst") relative to that file, workflow/rules/.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable

from .. import layout
from ..config import Cell, Config
from ..config.sampling import SAMPLING

Report = Callable[..., Any]
"""Snakemake's report(path, caption=..., category=..., subcategory=..., labels=...)"""


def as_json(obj) -> str:
    """A job's spec as the one-line string its params.spec holds (tests/test_pins.py pins it)."""
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------- a job's inputs
def teacher_features_dir(cfg: Config, teacher: str, alignment: str = "pooled") -> str:
    return layout.teacher_features_dir(cfg.results_dir, teacher, alignment)


FEATURE_SPLITS = {"pooled": ("train", "val"), "tokenwise": ("train",)}
"""The splits a cell reads features of: pooled, train and val (the feature probe reads val's too);
token-wise, train only (nothing reads val spans, and they cost a teacher pass)."""


def feature_caches(cfg: Config) -> list[tuple[str, str]]:
    """(teacher, alignment) of every feature cache the grid's cells read, in the config's order."""
    found: list[tuple[str, str]] = []
    for arm, teachers, layers, weights in cfg.repa.arms():
        for t in teachers if layers and weights else []:
            if (t.name, arm.alignment) not in found:
                found.append((t.name, arm.alignment))
    return found


def feature_inputs(cfg: Config, cell: Cell) -> list[str]:
    """Cached mode: a REPA cell reads its teacher's features of its alignment."""
    if cell.is_baseline or cfg.teacher_features != "cached":
        return []
    alignment = cfg.arm(cell).alignment
    folder = teacher_features_dir(cfg, cell.teacher_name, alignment)
    files = [f"{folder}/{split}.npy" for split in FEATURE_SPLITS[alignment]]
    return files + ([f"{folder}/train.spans.npy"] if alignment == "tokenwise" else [])


def feature_manifests(cfg: Config) -> list[str]:
    """Cached mode: every feature cache's manifests; their wall_s is the cache cost of the amortised
    Table 1."""
    if cfg.teacher_features != "cached":
        return []
    return [f"{teacher_features_dir(cfg, t, alignment)}/{split}.json" for t, alignment in feature_caches(cfg)
            for split in FEATURE_SPLITS[alignment]]


def probe_teachers(cfg: Config) -> list[str]:
    """Cached mode: the teachers with pooled features, which the feature probe of `compare` reads."""
    if cfg.teacher_features != "cached":
        return []
    return [t for t, alignment in feature_caches(cfg) if alignment == "pooled"]


def train_features(cfg: Config) -> list[str]:
    """probe_teachers' train features, in that order."""
    return [f"{teacher_features_dir(cfg, t)}/train.npy" for t in probe_teachers(cfg)]


def teacher_labels(cfg: Config) -> list[str]:
    """Every cell's teacher label (teacher, or teacher+tag for another arm), in grid order: the teachers
    of Table 1, the figures and `compare`."""
    return list(dict.fromkeys(c.teacher for c in cfg.cells() if not c.is_baseline))


def built_teacher_model(cfg: Config, teacher: str) -> list[str]:
    """A teacher made from init_from_config, convert_from or control_of is built by the workflow;
    others are hub ids or dirs."""
    t = cfg.teacher(teacher)
    return [t.name_or_path] if t.built_by_workflow else []


def control_teachers(cfg: Config) -> list[str]:
    """The random-init controls (init_from_config), which `compare` reads against the teachers."""
    return [t.name for t in cfg.repa.teachers if t.init_from_config]


def twin_pairs(cfg: Config) -> list[str]:
    """Each matched twin as teacher:twin (control_of), within each arm that has both (their labels)."""
    from ..config import arm_label

    pairs = []
    for arm, teachers, _, _ in cfg.repa.arms():
        names = {t.name for t in teachers}
        pairs += [f"{arm_label(t.control_of, arm.tag)}:{arm_label(t.name, arm.tag)}" for t in teachers
                  if t.control_of in names]
    return list(dict.fromkeys(pairs))


def sampler_settings() -> dict[str, Any]:
    """The `sample` and `report_samples` rules' sampler params: the defaults of `repa-mdlm sample`, from
    their one home (config/sampling.py)."""
    return asdict(SAMPLING)


def halving_rung_steps(cfg: Config) -> list[int]:
    """The steps at which halving judges the configurations, the end left out ([]: the full grid)."""
    if not cfg.halving.enabled or not cfg.repa.teachers:
        return []
    from ..config import rung_steps

    return rung_steps(cfg.halving.rungs, cfg.train.steps, cfg.train.val_every)[:-1]


# ---------------------------------------------------------------- a job's threads and requests
def job_resources(cfg: Config, step: str) -> dict[str, Any]:
    """Scheduler requests of a GPU step (config: resources.<step>); runtime grows with attempt."""
    r = getattr(cfg.resources, step)
    res = {"mem_mb": r.mem_mb, "runtime": lambda wildcards, attempt: r.runtime_min * attempt, "gpu": r.gpus}
    if r.gpus:
        res["cpus_per_gpu"] = r.cpus_per_gpu
    if r.gpu_model:
        res["gpu_model"] = r.gpu_model
    return res


def job_threads(cfg: Config, step: str) -> int:
    r = getattr(cfg.resources, step)
    return r.cpus_per_gpu * r.gpus if r.gpus else r.threads


def tracking_setting(cfg: Config) -> dict[str, str]:
    """The tracking section (TensorBoard, W&B) as a string resource of the train and evaluate jobs, on
    their command line as --tracking: like the speed-only train settings (specs.throughput_setting_codes),
    it changes what a job logs, not what it computes, so it is in no spec (params) and changing it never
    re-runs a cell. (Executors forward only integer resources; a job started elsewhere re-reads it from
    the config.)"""
    return {"tracking": as_json(cfg.tracking.__dict__)}


# ---------------------------------------------------------------- what the report rules declare
def table_outputs(results_dir: str, report: Report) -> list:
    """The runs table and both Table 1 variants in every format; the HTML ones go in the report."""
    tables = f"{results_dir}/{layout.TABLES}"
    return [f"{tables}/{name}" for name in layout.RUNS_TABLE_FILES] + [
        f"{tables}/{stem}.{ext}" if ext != "html" else report(
            f"{tables}/{stem}.html", caption=f"../report/{stem}.rst", category="Table 1",
            labels={"variant": variant})
        for stem, variant in layout.TABLE_VARIANTS.items()
        for ext in layout.TABLE_FORMATS
    ]


def provenance_outputs(results_dir: str, report: Report) -> list:
    """Which commit, packages and GPUs produced the cells (from their train_summary.json), with warnings."""
    tables = f"{results_dir}/{layout.TABLES}"
    json_file, md, html = layout.PROVENANCE_FILES
    return [f"{tables}/{json_file}", f"{tables}/{md}", report(
        f"{tables}/{html}", caption="../report/provenance.rst", category="Table 1",
        labels={"variant": "provenance of every cell"})]


def figure_outputs(results_dir: str, figures, report: Report) -> list:
    """Each figure (layout.Figure) in every format; the PNG goes in the report, under its caption."""
    return [
        f"{results_dir}/{layout.FIGURES}/{fig.stem}.{ext}" if ext != "png" else report(
            f"{results_dir}/{layout.FIGURES}/{fig.stem}.png", caption=f"../report/{fig.caption}.rst",
            category="Figures", subcategory=fig.subcategory, labels=fig.labels)
        for fig in figures
        for ext in layout.FIGURE_FORMATS
    ]


def sample_outputs(results_dir: str, report: Report) -> list:
    """The text samples of the best REPA cell and the baseline, as Markdown and, in the report, HTML."""
    md, html = layout.REPORT_SAMPLES
    return [f"{results_dir}/{layout.SAMPLES}/{md}", report(
        f"{results_dir}/{layout.SAMPLES}/{html}", caption="../report/samples.rst", category="Samples",
        labels={"cells": "best REPA cell and baseline"})]


def cell_sample_output(results_dir: str, report: Report, cells: dict[str, Cell]) -> Any:
    """Any cell's samples, by target (the {cell} wildcard), in the report with the cell's settings."""
    def labels(wildcards) -> dict[str, str]:
        cell = cells[wildcards.cell]
        return {"cell": wildcards.cell, "teacher": cell.teacher, "layer": str(cell.layer or "-"),
                "seed": str(cell.seed), "weight": "-" if cell.weight is None else f"{cell.weight:.2f}"}

    return report(f"{results_dir}/{layout.SAMPLES}/{layout.cell_samples('{cell}')}",
                  caption="../report/sample_cell.rst", category="Samples", subcategory="Per cell", labels=labels)


def comparison_outputs(results_dir: str) -> list[str]:
    """What `compare` writes: the paired comparisons, controls, power, the feature probe and the verdict."""
    return [f"{results_dir}/{layout.TABLES}/{name}" for name in layout.COMPARISON_FILES]


def comparison_page_sources(results_dir: str) -> list[str]:
    """compare's files that become pages of the HTML report."""
    return [f"{results_dir}/{layout.TABLES}/{name}" for name in layout.COMPARISON_PAGES]


def comparison_pages(results_dir: str, report: Report) -> list:
    """Those files as HTML pages, beside Table 1 (the report shows HTML inline, not Markdown or CSV)."""
    return [report(
        f"{results_dir}/{layout.TABLES}/{layout.report_page(name)}",
        caption=f"../report/{layout.file_stem(name)}.rst", category="Table 1", labels={"variant": label})
        for name, label in layout.COMPARISON_PAGES.items()
    ]
