"""Where every file of a sweep lives, relative to `results_dir`: one home for the names.

The package and the workflow's rules (`workflow/rules/*.smk`) both import this module, so a rule
can never declare a file the code does not write. It imports nothing, for the Snakefile's parse.

    results_dir/
      data/            manifest.json, tokenizer/, {train,val,test}.bin
      teachers/<t>/    model/ (teachers the workflow builds), features/{train,val}.{npy,json}
      runs/<cell>/     model/, train_log.jsonl, train_summary.json, config.yaml, metrics.json,
                       generative.json
      judge/           model/, judge.json (the causal judge, when the workflow trains one)
                       while training: checkpoint/, checkpoint.prev/, train_log.partial.jsonl,
                       progress.json (the heartbeat)
      tables/          runs.{parquet,csv}, table1*.{csv,md,tex,html}, provenance.{json,md,html},
                       verdict.{md,html}, paired/controls/power.{csv,html}, ...
      figures/         fig2..fig8 as .png and .pdf
      samples/         <cell>.md, report_samples.{md,html}
      logs/            one log per job
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---------------------------------------------------------------- top-level folders
DATA = "data"
TEACHERS = "teachers"
RUNS = "runs"
TABLES = "tables"
FIGURES = "figures"
SAMPLES = "samples"
LOGS = "logs"

# ---------------------------------------------------------------- data/
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer"
SPLITS = ("train", "val", "test")


def split_file(split: str) -> str:
    return f"{split}.bin"


# ---------------------------------------------------------------- teachers/<teacher>/
TEACHER_MODEL = "model"
FEATURES = "features"
FEATURES_TOKENWISE = "features-tokenwise"
"""A teacher's token-wise (span) features, beside its pooled ones."""


def features_folder(alignment: str) -> str:
    return FEATURES_TOKENWISE if alignment == "tokenwise" else FEATURES


def teacher_features_dir(results_dir: str, teacher: str, alignment: str = "pooled") -> str:
    """A teacher's feature cache of an alignment: results/teachers/<t>/features[-tokenwise]."""
    return f"{results_dir}/{TEACHERS}/{teacher}/{features_folder(alignment)}"

# ---------------------------------------------------------------- runs/<cell>/
MODEL = "model"
TRAIN_LOG = "train_log.jsonl"
TRAIN_LOG_SHA256 = "train_log_sha256"  # train_summary.json's key for the log's sha256 (analysis.runs.read_log_rows)
PARTIAL_LOG = "train_log.partial.jsonl"
TRAIN_SUMMARY = "train_summary.json"
WRITER_FILE = ".snakemake-writer.json"  # results_lock: the Snakemake that writes a results folder
# Where training time went (training/trainer.py), copied from train_summary.json by evaluate: the optimisation
# steps alone over the whole run, then the median step, start-up, validation and checkpoint writes of
# the process that finished it (which began at step timings_from_step).
TIMING_KEYS = ("step_seconds", "step_seconds_median", "startup_seconds", "validation_seconds",
               "checkpoint_seconds", "timings_from_step")
LOG_TIMING_KEYS = ("tokens_per_s", "elapsed_s")
"""A training log row's wall-clock fields: the only ones two runs of one cell may differ in."""
RUN_CONFIG = "config.yaml"
METRICS = "metrics.json"
HEARTBEAT = "progress.json"
CHECKPOINT = "checkpoint"
PREVIOUS_CHECKPOINT = "checkpoint.prev"
CHECKPOINT_STATE = "state.json"
SUPERSEDED = "superseded"
"""<run>/superseded/<spec hash>/: checkpoints of another spec or other inputs, moved aside, not resumed."""


PROVENANCE = "provenance"
"""train_summary.json's key for the run's provenance record (provenance.collect)."""
MODEL_CARD = "README.md"
"""An exported cell's model card (export.py), beside its model and tokenizer files."""


def run_dir(results_dir: str, cell: str) -> str:
    """A cell's run folder (`cell` may be Snakemake's `{cell}` wildcard)."""
    return f"{results_dir}/{RUNS}/{cell}"


TRAINING_OUTPUTS = (MODEL, TRAIN_LOG, TRAIN_SUMMARY, RUN_CONFIG)
"""What the `train` job writes in the run folder (its declared outputs)."""


def cell_results(generative: bool, zero_shot_sets) -> list[str]:
    """What the jobs after training write in the run folder: metrics.json, generative.json (generative.samples
    > 0) and one zero_shot/<set>.json per scored set. Each is made from the training outputs."""
    return [METRICS, *([GENERATIVE] if generative else []), *(zero_shot_result(s) for s in zero_shot_sets)]


# ---------------------------------------------------------------- successive halving (halving.smk)
def rung_record(step: int | str) -> str:
    """runs/<cell>/halving/step<S>.json: the cell trained to a rung's step S, its validation PPL there."""
    return f"halving/step{step}.json"


def rung_decisions(rung: int | str) -> str:
    """tables/halving/rung<k>.csv: rung k's decisions, written before rung k + 1 starts."""
    return f"halving/rung{rung}.csv"


HALVING_FILES = ("halving.csv", "halving.md", "halving.html")
"""tables/: every rung's decisions in one table, and the cells that reached the end (the HTML in the report)."""
HALVING_FIGURE = "fig11_halving"
"""figures/: the validation curves, stopped cells marked where they stopped."""


def job_log(rule: str, name: str | None = None) -> str:
    """logs/<rule>.log, or logs/<rule>/<name>.log for a rule with one job per cell, teacher or split."""
    return f"{LOGS}/{rule}.log" if name is None else f"{LOGS}/{rule}/{name}.log"


# ---------------------------------------------------------------- judge/ (the trained judge)
JUDGE = "judge"
JUDGE_MODEL = "model"
JUDGE_INFO = "judge.json"
GENERATIVE = "generative.json"
"""runs/<cell>/generative.json: the cell's samples, their generative perplexity and entropy."""


# ---------------------------------------------------------------- tables/
RUNS_TABLE_FILES = ("runs.parquet", "runs.csv")
TABLE_FORMATS = ("csv", "md", "tex", "html")
TABLE_VARIANTS = {"table1": "as in the paper", "table1_amortized": "feature cache amortised"}
"""Table 1's stems, with the report's label of each."""
TABLE_FILES = RUNS_TABLE_FILES + tuple(f"{stem}.{ext}" for stem in TABLE_VARIANTS for ext in TABLE_FORMATS)
PROVENANCE_FILES = ("provenance.json", "provenance.md", "provenance.html")
"""The sweep's provenance (which cells came from which commit and package versions), beside Table 1;
written by `aggregate` from the cells' train_summary.json."""
COMPARISON_FILES = ("paired.csv", "controls.csv", "power.csv", "steps_to_baseline.csv", "teacher_features.csv",
                    "verdict.md")
"""Written by `compare` (analysis.verdict.compare_main): the paired comparisons with the baseline and of each
teacher with its twin and the unmatched controls (Holm-corrected), their power, the steps to the
baseline's quality, the teacher-feature probe and the verdict."""
COMPARISON_PAGES = {"verdict.md": "verdict: does REPA help?", "paired.csv": "paired comparisons (paired.csv)",
                    "controls.csv": "teachers against their twins and controls (controls.csv)",
                    "power.csv": "power of the paired tests (power.csv)"}
"""The comparison's files the HTML report shows beside Table 1, each as tables/<stem>.html (report_page,
written by `repa-mdlm report-pages`), with its report label; its caption is workflow/report/<stem>.rst."""


def file_stem(name: str) -> str:
    """A file name without its extension: verdict.md -> verdict."""
    return name.rsplit(".", 1)[0]


def report_page(name: str) -> str:
    """<stem>.html: a Markdown or CSV file of tables/ as a page of the HTML report, beside it."""
    return f"{file_stem(name)}.html"


ZERO_SHOT = "zero_shot"
"""data/zero_shot/<set>/ (the set's test.bin) and runs/<cell>/zero_shot/<set>.json."""
ZERO_SHOT_TABLE = "zero_shot"
"""tables/zero_shot.{csv,md,html}: every cell's ELBO PPL on each zero-shot set, by teacher."""
ZERO_SHOT_TABLE_FILES = tuple(f"{ZERO_SHOT_TABLE}.{ext}" for ext in ("csv", "md", "html"))


def zero_shot_result(test_set: str) -> str:
    """A cell's result on one zero-shot set, relative to its run folder."""
    return f"{ZERO_SHOT}/{test_set}.json"


GENERATIVE_TABLE = "generative"
"""tables/generative.{csv,md,html} and generative_cells.csv: samples scored by the judge."""
GENERATIVE_TABLE_FILES = tuple(f"{GENERATIVE_TABLE}{suffix}" for suffix in (".csv", "_cells.csv", ".md", ".html"))


# ---------------------------------------------------------------- figures/
FIGURE_FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class Figure:
    """One figure file stem, with what the HTML report shows beside it."""

    stem: str
    caption: str
    """workflow/report/<caption>.rst"""
    subcategory: str
    labels: dict[str, str] = field(default_factory=dict)


def _labels(figure: str, teacher: str = "all", layer: str = "all", weight: str = "all") -> dict[str, str]:
    return {"figure": figure, "teacher": teacher, "layer": layer, "weight": weight}


def heatmap_stem(teacher: str) -> str:
    return f"fig6_heatmap_{teacher}"


def figure_files(teachers) -> list[Figure]:
    """Figures 2-8 in report order: the paper's 2-5, one heatmap per teacher, the cost Pareto front
    and the REPA-loss curves."""
    return [
        Figure("fig2_training_curves", "fig2", "Training curves", _labels("Fig. 2", "best", "best", "best")),
        Figure("fig3_teacher", "fig3", "Means by axis", _labels("Fig. 3", teacher="by teacher")),
        Figure("fig4_layer", "fig4", "Means by axis", _labels("Fig. 4", layer="by layer")),
        Figure("fig5_weight", "fig5", "Means by axis", _labels("Fig. 5", weight="by weight")),
        *(Figure(heatmap_stem(t), "heatmap", "Heatmaps", _labels("heatmap", teacher=t)) for t in teachers),
        Figure("fig7_pareto", "pareto", "Cost", _labels("Pareto front")),
        Figure("fig8_repa_loss", "repa_loss", "Training curves", _labels("REPA loss")),
    ]


GENERATIVE_FIGURES = (
    Figure("fig9_gen_ppl_entropy", "gen_ppl_entropy", "Generative quality", _labels("gen. PPL vs entropy")),
    Figure("fig10_elbo_vs_gen_ppl", "elbo_vs_gen_ppl", "Generative quality", _labels("ELBO PPL vs gen. PPL")),
)
"""Written by the generative report, beside Figures 2-8."""


def figure_stems(teachers) -> list[str]:
    return [f.stem for f in figure_files(teachers)]


# ---------------------------------------------------------------- samples/
REPORT_SAMPLES = ("report_samples.md", "report_samples.html")


def cell_samples(cell: str) -> str:
    return f"{cell}.md"
