"""The runs table and the training logs: what every table, figure, verdict and sample page reads.

- ``collect_runs``: one row per cell from its metrics.json (validated by ``read_metrics``);
- the baseline/REPA selection (``is_baseline``, ``baseline_runs``, ``repa_runs``, ``baseline_cell``,
  ``best_repa_config``, ``config_means``, ``group_means``), written once here;
- the train_log.jsonl readers (``read_val_curve``, ``read_repa_curve``) and seed-averaged curves.

pandas/numpy only (no matplotlib), so computing a verdict never loads the plotting stack.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .config import BASELINE
from .io import DataError, read_json_object, rebuild_command
from .layout import TRAIN_SUMMARY
from .stats import mean_ci95

METRIC_KEYS = (
    "cell", "teacher", "layer", "weight", "seed", "test_nelbo", "test_nelbo_se",
    "test_ppl", "test_ppl_ci95", "test_tokens", "t_draws", "train_wall_s",
    "train_tokens_per_s", "steps", "teacher_features",
)
TRAINING_KEYS = ("train_wall_s", "train_tokens_per_s", "steps")
# Where training time went (train.py), copied from train_summary.json by evaluate: the optimisation
# steps alone over the whole run, then the median step, start-up, validation and checkpoint writes of
# the process that finished it (which began at step timings_from_step).
TIMING_KEYS = ("step_seconds", "step_seconds_median", "startup_seconds", "validation_seconds",
               "checkpoint_seconds", "timings_from_step")
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
    for key in ("test_nelbo_se", "test_nelbo_mc_se", *TIMING_KEYS):  # NaN/absent where not known
        if key in m and m[key] is not None and (not _number(m[key]) or m[key] < 0):
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
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(v is None or _number(v) for v in ci)):
        return f"test_ppl_ci95 must be [lo, hi], got {ci!r}"
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


def _log_rows(path: str | os.PathLike) -> list[dict]:
    """The JSON rows of a train_log.jsonl; unparseable lines (e.g. cut by a crash) are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        warnings.warn(f"{path}: cannot read training log ({e})")
        return []
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{i}: not JSON, skipped")
            continue
        if isinstance(r, dict) and "step" in r:
            rows.append(r)
    return rows


def _curve(rows: list[dict], column: str, value: Callable[[dict], float | None]) -> pd.DataFrame:
    out = [(int(r["step"]), float(v)) for r in rows if (v := value(r)) is not None and np.isfinite(v)]
    df = pd.DataFrame(out, columns=["step", column])
    # the last row wins for repeated steps (a run resumed from a checkpoint logs them again)
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def read_val_curve(path: str | os.PathLike) -> pd.DataFrame:
    """(step, val_ppl) from a train_log.jsonl."""
    def value(r):
        if r.get("val_ppl") is not None:
            return r["val_ppl"]
        return math.exp(r["val_nelbo"]) if r.get("val_nelbo") is not None else None
    return _curve(_log_rows(path), "val_ppl", value)


def read_repa_curve(path: str | os.PathLike) -> pd.DataFrame:
    """(step, repa): the alignment loss (before the weight λ) at each logged training step."""
    return _curve(_log_rows(path), "repa", lambda r: r.get("repa"))


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
