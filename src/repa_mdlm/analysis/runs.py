"""The runs table and the training logs: what every table, figure, verdict and sample page reads.

- ``collect_runs``: one row per cell from its metrics.json (validated by ``read_metrics``);
- the baseline/REPA selection (``is_baseline``, ``baseline_runs``, ``repa_runs``, ``baseline_cell``,
  ``best_repa_config``, ``config_means``, ``group_means``), written once here;
- the train_log.jsonl readers (``read_log_rows``, which refuses rows training did not write;
  ``read_val_curve``, ``read_repa_curve``) and seed-averaged curves.

pandas/numpy only (no matplotlib), so computing a verdict never loads the plotting stack.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..config import BASELINE
from ..io import DataError, file_sha256, read_json_object, rebuild_command
from ..layout import TIMING_KEYS, TRAIN_LOG_SHA256, TRAIN_SUMMARY
from .stats import mean_ci95

METRIC_KEYS = (
    "cell", "teacher", "layer", "weight", "seed", "test_nelbo", "test_nelbo_se",
    "test_ppl", "test_ppl_ci95", "test_tokens", "t_draws", "train_wall_s",
    "train_tokens_per_s", "steps", "teacher_features",
)
TRAINING_KEYS = ("train_wall_s", "train_tokens_per_s", "steps")
DERIVED_COLUMNS = ["test_ppl_se", "test_ppl_mc_se", "world_size", "gpu_hours"]


# ---------------------------------------------------------------------- metrics

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_problem(m: dict) -> str | None:
    """What makes a metrics.json impossible (None if nothing): a non-number where a number belongs, a
    non-finite or out-of-range value, or a PPL that is not exp(N-ELBO). An N-ELBO per token is a
    bound on a negative log-likelihood, so it is >= 0 and the PPL >= 1."""
    for key in ("test_nelbo", "test_ppl", "train_wall_s", "train_tokens_per_s", "test_tokens", "steps"):
        if not _number(m[key]) or not math.isfinite(m[key]):
            return f"{key} = {m[key]!r} is not a finite number"
    problem = _standard_error_problem(m)
    if problem:
        return problem
    for key in TIMING_KEYS:  # None or absent where not known (a NaN is never how a file says that)
        if key in m and m[key] is not None and (not _number(m[key]) or not math.isfinite(m[key]) or m[key] < 0):
            return f"{key} = {m[key]!r} is not a non-negative number"
    if m.get("step_seconds") is not None and not (math.isfinite(m["step_seconds"]) and m["step_seconds"] > 0):
        return f"step_seconds = {m['step_seconds']!r} must be a finite number > 0"
    if m["test_nelbo"] < 0 or m["test_ppl"] < 1:
        return f"test_nelbo = {m['test_nelbo']!r} and test_ppl = {m['test_ppl']!r}: an N-ELBO is >= 0 and a PPL >= 1"
    if not math.isclose(math.log(m["test_ppl"]), m["test_nelbo"], rel_tol=1e-6, abs_tol=1e-9):  # no overflow
        return f"test_ppl = {m['test_ppl']!r} is not exp(test_nelbo = {m['test_nelbo']!r})"
    if m["train_wall_s"] <= 0 or m["train_tokens_per_s"] <= 0 or m["test_tokens"] <= 0:
        return "train_wall_s, train_tokens_per_s and test_tokens must be > 0"
    ci = m["test_ppl_ci95"]
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(v is None or (_number(v) and math.isfinite(v)) for v in ci)):
        return f"test_ppl_ci95 must be [lo, hi], got {ci!r}"
    return None


def _standard_error_problem(m: dict) -> str | None:
    """A standard error that is not a finite number >= 0 (None/absent: metrics that predate it). NaN is
    what evaluation writes when it cannot estimate one: test_nelbo_se needs two test sequences, and
    test_nelbo_mc_se two diffusion times per sequence as well (the config refuses fewer; a metrics.json
    evaluated before that is refused here, with the same fix)."""
    for key, needs in (("test_nelbo_se", "evaluate.sequences >= 2 (or null: the whole test split)"),
                       ("test_nelbo_mc_se", "evaluate.sequences >= 2 (or null) and evaluate.t_draws >= 2")):
        v = m.get(key)
        if v is None or (_number(v) and math.isfinite(v) and v >= 0):
            continue
        if _number(v) and math.isnan(v):
            return (f"{key} = nan: the evaluation could not estimate it from {m.get('test_sequences', '?')} test "
                    f"sequence(s) and {m.get('t_draws', '?')} diffusion time(s) each; set {needs}")
        return f"{key} = {v!r} is not a non-negative number"
    return None


def read_metrics(path: str | os.PathLike) -> dict:
    """One cell's metrics.json, validated, its CI split into _lo/_hi and its world_size added."""
    m = read_json_object(path, "metrics", rule="evaluate")
    missing = [k for k in METRIC_KEYS if k not in m]
    if missing:
        raise DataError(f"{path}: metrics.json lacks key(s) {', '.join(missing)}")
    problem = metrics_problem(m)
    if problem:
        # the training figures are copied from train_summary.json: re-evaluating would copy them again
        rule = "train" if any(key in problem for key in TRAINING_KEYS + TIMING_KEYS) else "evaluate"
        raise DataError(f"{path}: {problem}. Re-run the cell's {rule} with {rebuild_command(path, rule)}")
    ci = m.pop("test_ppl_ci95")
    m["test_ppl_ci95_lo"], m["test_ppl_ci95_hi"] = (float("nan") if v is None else v for v in ci)
    # The run's GPU count lives in train_summary.json beside metrics.json (absent: one device).
    summary = Path(path).with_name(TRAIN_SUMMARY)
    world = read_json_object(summary, "training summary", rule="train").get("world_size") if summary.exists() else None
    m["world_size"] = int(world or 1)
    return m


def collect_runs(metrics_paths: list[str]) -> pd.DataFrame:
    """One row per cell with every metrics.json key (the CI split into _lo/_hi), plus
    test_ppl_se (standard error of the PPL, ppl * nelbo_se, delta method), test_ppl_mc_se (its
    Monte Carlo part alone, from test_nelbo_mc_se; NaN where the metrics predate it),
    world_size (from train_summary.json, else 1) and gpu_hours (train_wall_s / 3600 * world_size), then
    the TIMING_KEYS. A cell trained before step_seconds was recorded gets its train_wall_s there: the
    trainer has always summed the optimisation steps alone into it, so an old sweep re-aggregates to
    the same step times; the other timing columns are NaN for it (unknown).
    Sorted baseline first, then teacher, layer, weight, seed."""
    rows = [read_metrics(p) for p in metrics_paths]
    columns = ([k for k in METRIC_KEYS if k != "test_ppl_ci95"] + ["test_ppl_ci95_lo", "test_ppl_ci95_hi"]
               + DERIVED_COLUMNS + list(TIMING_KEYS))
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    dup = df["cell"][df["cell"].duplicated()].tolist()
    if dup:
        raise ValueError(f"cell(s) {dup} appear in more than one metrics.json")
    df["test_ppl_se"] = pd.to_numeric(df["test_ppl"]) * pd.to_numeric(df["test_nelbo_se"])
    # the Monte Carlo part alone (metrics written before it was recorded: unknown)
    mc = df["test_nelbo_mc_se"] if "test_nelbo_mc_se" in df else pd.Series(np.nan, index=df.index)
    df["test_ppl_mc_se"] = pd.to_numeric(df["test_ppl"]) * pd.to_numeric(mc)
    df["gpu_hours"] = pd.to_numeric(df["train_wall_s"]) / 3600.0 * df["world_size"]
    for key in TIMING_KEYS:
        df[key] = pd.to_numeric(df[key], errors="coerce") if key in df else np.nan
    df["step_seconds"] = df["step_seconds"].fillna(pd.to_numeric(df["train_wall_s"]))
    extra = [c for c in df.columns if c not in columns]  # keep keys added later by evaluation
    df = df[columns + extra]
    df["layer"] = pd.array(df["layer"], dtype="Int64")  # null for the baseline
    df["weight"] = pd.to_numeric(df["weight"]).astype(float)
    df["seed"] = df["seed"].astype(int)
    df["_order"] = (~is_baseline(df)).astype(int)
    df = df.sort_values(["_order", "teacher", "layer", "weight", "seed"], na_position="first", kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


# -------------------------------------------------------------------- selection

def is_baseline(runs: pd.DataFrame) -> pd.Series:
    """True on the baseline's rows (no REPA)."""
    return runs["teacher"] == BASELINE


def baseline_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[is_baseline(runs)]


def repa_runs(runs: pd.DataFrame, evaluated: bool = False) -> pd.DataFrame:
    """The REPA cells; ``evaluated``: only those with a test PPL."""
    repa = runs[~is_baseline(runs)]
    return repa.dropna(subset=["test_ppl"]) if evaluated else repa


def repa_teachers(runs: pd.DataFrame, evaluated: bool = False) -> list[str]:
    """The REPA teachers, in order of first appearance."""
    return list(dict.fromkeys(repa_runs(runs, evaluated)["teacher"]))


def baseline_cell(runs: pd.DataFrame) -> str | None:
    """Seed 0 of the baseline, else its lowest seed."""
    base = baseline_runs(runs)
    return None if base.empty else str(base.sort_values("seed")["cell"].iloc[0])


def config_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean test PPL over seeds (ppl) and the seed count (n) per REPA (teacher, layer, weight)."""
    return (repa_runs(runs, evaluated=True).groupby(["teacher", "layer", "weight"], sort=True)
            .agg(ppl=("test_ppl", "mean"), n=("test_ppl", "size")).reset_index())


def best_repa_config(runs: pd.DataFrame) -> dict | None:
    """The REPA (teacher, layer, weight) with the lowest test PPL averaged over its seeds, and
    the cell (lowest seed) that stands for it: {"teacher", "layer", "weight", "ppl_mean", "cell"}."""
    means = config_means(runs)
    if means.empty:
        return None
    best = means.loc[means["ppl"].idxmin()]
    teacher, layer, weight = best["teacher"], best["layer"], best["weight"]
    repa = repa_runs(runs, evaluated=True)
    cells = repa[(repa["teacher"] == teacher) & (repa["layer"] == layer) & (repa["weight"] == weight)]
    return {"teacher": teacher, "layer": int(layer), "weight": float(weight), "ppl_mean": float(best["ppl"]),
            "cell": cells.sort_values("seed")["cell"].iloc[0], "cells": cells["cell"].tolist()}


def baseline_ppl_ci95(runs: pd.DataFrame) -> tuple[float, float, float, int] | None:
    """(mean, lo, hi, n) of the baseline's test PPLs over seeds; None without an evaluated baseline."""
    b = baseline_runs(runs)["test_ppl"].dropna()
    return mean_ci95(b) if not b.empty else None


def baseline_mean_ppl(runs: pd.DataFrame) -> float | None:
    """The baseline's mean test PPL over seeds; None without an evaluated baseline."""
    st = baseline_ppl_ci95(runs)
    return st[0] if st else None


def group_means(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean test PPL per value of ``by`` over the REPA cells (and seeds), with the 95 % Student-t
    interval over those cells (NaN for a single cell) and its half-width ``ci``."""
    rows = {}
    for key, g in repa_runs(runs, evaluated=True).groupby(by, sort=True):
        m, lo, hi, n = mean_ci95(g["test_ppl"])
        rows[key] = {"mean": m, "lo": lo, "hi": hi, "n": n, "ci": (hi - lo) / 2}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "lo", "hi", "n", "ci"])
    out.index.name = by
    return out


def pareto_front(cost: np.ndarray, ppl: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (no other point is both cheaper-or-equal and lower
    in PPL, one of them strictly), ordered by cost."""
    order = np.lexsort((ppl, cost))
    front, best = [], np.inf
    for i in order:
        if np.isfinite(cost[i]) and np.isfinite(ppl[i]) and ppl[i] < best:
            front.append(i)
            best = ppl[i]
    return np.asarray(front, dtype=int)


# ------------------------------------------------------------------ training logs

def train_logs_by_cell(logs: list[str]) -> dict[str, str]:
    """Training logs keyed by their cell: the name of the run folder holding them."""
    return {Path(p).parent.name: p for p in logs}


# A row of a skipped bad batch (train.max_bad_batches) carries these as the trainer measured them,
# NaN or inf included; every other number a training log holds is finite.
SKIPPED_ROW_METRICS = ("loss", "nelbo", "repa", "grad_norm")


def _row_problem(r, trained_steps: int | None) -> str | None:
    """Why a parsed log row cannot be one the trainer wrote (None: it can)."""
    if not isinstance(r, dict):
        return f"not a JSON object ({type(r).__name__})"
    step = r.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step = {step!r} is not a step number"
    if trained_steps is not None and step > trained_steps:
        return f"step {step} is beyond the {trained_steps} steps the cell trained ({TRAIN_SUMMARY})"
    exempt = SKIPPED_ROW_METRICS if r.get("skipped") is True else ()
    for key, v in r.items():
        if _number(v) and not math.isfinite(v) and key not in exempt:
            return f"{key} = {v!r} is not a finite number"
    return None


def read_log_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a finished train_log.jsonl, as the trainer wrote them: one JSON object per line with
    its step, steps rising (a resumed run drops the rows after its checkpoint before it goes on), every
    number finite (but the loss of a skipped bad batch), and, where train_summary.json lies beside it,
    no step beyond the steps trained, the last row at the last step and the file's sha256 the one the
    summary recorded (summaries written before it was recorded: not checked). Anything else (a row
    appended by hand, a NaN, a cut or shuffled file, another cell's log copied over) is a DataError naming
    the file and the command that retrains the cell: a curve, a step-to-baseline or a figure is never
    drawn from rows training did not write."""
    fix = f"Train the cell again with {rebuild_command(path, 'train')}"
    summary_path = Path(path).with_name(TRAIN_SUMMARY)
    trained = None
    if summary_path.exists():
        summary = read_json_object(summary_path, "training summary", rule="train")
        trained = summary.get("steps")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the training log ({e}). {fix}") from e
    rows: list[dict] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not a JSON row ({e}); this is not the log training wrote. {fix}") from e
        problem = _row_problem(r, trained)
        if problem is None and rows and r["step"] <= rows[-1]["step"]:
            problem = f"step {r['step']} comes after step {rows[-1]['step']} (the trainer's steps only rise)"
        if problem:
            raise DataError(f"{path}:{i}: {problem}; this is not the log training wrote. {fix}")
        rows.append(r)
    if not rows:
        raise DataError(f"{path}: the training log holds no rows. {fix}")
    if trained is not None and rows[-1]["step"] != trained:
        raise DataError(f"{path}: its last row is step {rows[-1]['step']}, but the cell trained {trained} steps "
                        f"({summary_path}); the log is cut short or is not this run's. {fix}")
    recorded = summary.get(TRAIN_LOG_SHA256) if trained is not None else None
    if recorded and file_sha256(path) != recorded:  # rows that each look right, but not this run's
        raise DataError(f"{path}: its sha256 is not the one {summary_path} recorded when training wrote it; "
                        f"the log was changed or copied from another run. {fix}")
    return rows


def _curve(rows: list[dict], column: str, value: Callable[[dict], float | None]) -> pd.DataFrame:
    out = [(int(r["step"]), float(v)) for r in rows if (v := value(r)) is not None and np.isfinite(v)]
    return pd.DataFrame(out, columns=["step", column])


def read_val_curve(path: str | os.PathLike) -> pd.DataFrame:
    """(step, val_ppl) from a train_log.jsonl."""
    def value(r):
        if r.get("val_ppl") is not None:
            return r["val_ppl"]
        return math.exp(r["val_nelbo"]) if r.get("val_nelbo") is not None else None
    return _curve(read_log_rows(path), "val_ppl", value)


def read_repa_curve(path: str | os.PathLike) -> pd.DataFrame:
    """(step, repa): the alignment loss (before the weight λ) at each logged training step."""
    return _curve(read_log_rows(path), "repa", lambda r: r.get("repa"))


def mean_curve(paths: list[str], reader: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
    """Mean over seeds at the steps every seed logged, with the seeds' min and max (lo, hi)."""
    curves = [c.set_index("step").iloc[:, 0] for c in (reader(p) for p in paths) if not c.empty]
    if not curves:
        return pd.DataFrame(columns=["step", "value", "lo", "hi", "n"])
    both = pd.concat(curves, axis=1, join="inner")
    return pd.DataFrame({"step": both.index.to_numpy(), "value": both.mean(axis=1).to_numpy(),
                         "lo": both.min(axis=1).to_numpy(), "hi": both.max(axis=1).to_numpy(), "n": len(curves)})


def rolling_mean(y: np.ndarray, window: int) -> np.ndarray:
    """A centred rolling mean over ``window`` points (``y`` as is when the window is 1 or too long)."""
    if window <= 1 or y.size < window:
        return y
    return pd.Series(y).rolling(window, center=True, min_periods=1).mean().to_numpy()
