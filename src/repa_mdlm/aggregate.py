"""Collect per-cell metrics into one table and compute the paper's Table 1.

Table 1 (Section 5.3) compares each teacher with the baseline using *means over
all of the teacher's cells* (every layer, weight and seed), not its best cell:

    PPL Red. %  = 100 * (baseline_ppl - teacher_mean_ppl) / baseline_ppl
    Time Inc. % = 100 * (teacher_mean_wall_s - baseline_wall_s) / baseline_wall_s
    Score       = PPL Red. % / Time Inc. %          (Eq. 4)

Next to the paper's columns, every mean carries a 95 % confidence interval: a Student-t
interval over the cells' test PPLs (so it measures the spread across layers, weights and
seeds, not only evaluation noise). Differences with the baseline use Welch's interval; a
baseline with a single seed is taken as exact. Each cell's own Monte Carlo standard error
(test_ppl_se = test_ppl * test_nelbo_se) is kept in the runs table.

``table1_amortized`` is the same table with each cached-feature cell's training time
increased by its share of the teacher's feature-cache cost (the teacher_features jobs'
``wall_s``), so cached and online REPA are compared on equal terms.

pandas/numpy only (no scipy, no torch), so the Snakefile's aggregation rule stays light.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from .config import BASELINE
from .io import DataError, read_json_object, rebuild_command

METRIC_KEYS = (
    "cell", "teacher", "layer", "weight", "seed", "test_nelbo", "test_nelbo_se",
    "test_ppl", "test_ppl_ci95", "test_tokens", "t_draws", "train_wall_s",
    "train_tokens_per_s", "steps", "teacher_features",
)
# The paper's columns, in the paper's order; CI and cost columns come after them.
TABLE1_COLUMNS = ["teacher", "n_cells", "ppl_mean", "ppl_reduction_pct", "time_increase_pct", "score"]
TABLE1_CI_COLUMNS = ["ppl_mean_ci95_lo", "ppl_mean_ci95_hi", "ppl_reduction_pct_ci95_lo", "ppl_reduction_pct_ci95_hi",
                     "time_increase_pct_ci95_lo", "time_increase_pct_ci95_hi", "ppl_mc_se", "train_wall_s_mean"]
AMORTIZED_COLUMNS = ["cache_wall_s", "cache_cells", "cache_wall_s_per_cell"]
TABLE_FILES = ("runs.parquet", "runs.csv",
               "table1.csv", "table1.md", "table1.tex", "table1.html",
               "table1_amortized.csv", "table1_amortized.md", "table1_amortized.tex", "table1_amortized.html")


# ----------------------------------------------------------------------------- io

def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it into place,
    so a crash never leaves a half-written output that Snakemake would accept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix so writers that infer the format from the name (savefig) still work.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


# ------------------------------------------------------------------------- collect

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


TRAINING_KEYS = ("train_wall_s", "train_tokens_per_s", "steps")


def metrics_problem(m: dict) -> str | None:
    """What makes a metrics.json impossible (None if nothing): a non-number where a number belongs, a
    non-finite or out-of-range value, or a PPL that is not exp(N-ELBO). An N-ELBO per token is a
    bound on a negative log-likelihood, so it is >= 0 and the PPL >= 1."""
    for key in ("test_nelbo", "test_ppl", "train_wall_s", "train_tokens_per_s", "test_tokens", "steps"):
        if not _number(m[key]) or not math.isfinite(m[key]):
            return f"{key} = {m[key]!r} is not a finite number"
    for key in ("test_nelbo_se", "test_nelbo_mc_se"):  # NaN where it cannot be estimated (one sequence)
        if key in m and m[key] is not None and (not _number(m[key]) or m[key] < 0):
            return f"{key} = {m[key]!r} is not a non-negative number"
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


def _read_metrics(path: str | os.PathLike) -> dict:
    m = read_json_object(path, "metrics", rule="evaluate")
    missing = [k for k in METRIC_KEYS if k not in m]
    if missing:
        raise DataError(f"{path}: metrics.json lacks key(s) {', '.join(missing)}")
    problem = metrics_problem(m)
    if problem:
        # the training figures are copied from train_summary.json: re-evaluating would copy them again
        rule = "train" if any(key in problem for key in TRAINING_KEYS) else "evaluate"
        raise DataError(f"{path}: {problem}. Re-run the cell's {rule} with {rebuild_command(path, rule)}")
    ci = m.pop("test_ppl_ci95")
    m["test_ppl_ci95_lo"], m["test_ppl_ci95_hi"] = (float("nan") if v is None else v for v in ci)
    # The run's GPU count lives in train_summary.json beside metrics.json (absent: one device).
    summary = Path(path).with_name("train_summary.json")
    world = read_json_object(summary, "training summary", rule="train").get("world_size") if summary.exists() else None
    m["world_size"] = int(world or 1)
    return m


DERIVED_COLUMNS = ["test_ppl_se", "test_ppl_mc_se", "world_size", "gpu_hours"]


def collect_runs(metrics_paths: list[str]) -> pd.DataFrame:
    """One row per cell with every metrics.json key (the CI split into _lo/_hi), plus
    test_ppl_se (standard error of the PPL, ppl * nelbo_se, delta method), test_ppl_mc_se (its
    Monte Carlo part alone, from test_nelbo_mc_se; NaN where the metrics predate it),
    world_size (from train_summary.json, else 1) and gpu_hours (train_wall_s / 3600 * world_size).
    Sorted baseline first, then teacher, layer, weight, seed."""
    rows = [_read_metrics(p) for p in metrics_paths]
    columns = ([k for k in METRIC_KEYS if k != "test_ppl_ci95"] + ["test_ppl_ci95_lo", "test_ppl_ci95_hi"]
               + DERIVED_COLUMNS)
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
    extra = [c for c in df.columns if c not in columns]  # keep keys added later by evaluation
    df = df[columns + extra]
    df["layer"] = pd.array(df["layer"], dtype="Int64")  # null for the baseline
    df["weight"] = pd.to_numeric(df["weight"]).astype(float)
    df["seed"] = df["seed"].astype(int)
    df["_order"] = (df["teacher"] != BASELINE).astype(int)
    df = df.sort_values(["_order", "teacher", "layer", "weight", "seed"], na_position="first", kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


def best_repa_config(runs: pd.DataFrame) -> dict | None:
    """The REPA (teacher, layer, weight) with the lowest test PPL averaged over its seeds, and
    the cell (lowest seed) that stands for it: {"teacher", "layer", "weight", "ppl_mean", "cell"}."""
    repa = runs[runs["teacher"] != BASELINE].dropna(subset=["test_ppl"])
    if repa.empty:
        return None
    means = repa.groupby(["teacher", "layer", "weight"], sort=True)["test_ppl"].mean()
    teacher, layer, weight = means.idxmin()
    cells = repa[(repa["teacher"] == teacher) & (repa["layer"] == layer) & (repa["weight"] == weight)]
    return {"teacher": teacher, "layer": int(layer), "weight": float(weight), "ppl_mean": float(means.min()),
            "cell": cells.sort_values("seed")["cell"].iloc[0], "cells": cells["cell"].tolist()}


def baseline_cell(runs: pd.DataFrame) -> str | None:
    """Seed 0 of the baseline, else its lowest seed."""
    base = runs[runs["teacher"] == BASELINE]
    return None if base.empty else str(base.sort_values("seed")["cell"].iloc[0])


# --------------------------------------------------------------------- statistics

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student-t CDF."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile by bisection on the CDF (no scipy): t_quantile(0.975, 3) = 3.182."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci95(values: Iterable[float]) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): the 95 % Student-t interval mean ± t_{0.975,n-1}·s/√n; NaN bounds for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan"), 1
    half = t_quantile(0.975, n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    return m, m - half, m + half, n


def diff_ci95(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, float]:
    """mean(x) - mean(y) with Welch's 95 % interval. A group of one value has no spread
    estimate and is taken as exact; two such groups give NaN bounds."""
    x = np.asarray([v for v in x if np.isfinite(v)], dtype=float)
    y = np.asarray([v for v in y if np.isfinite(v)], dtype=float)
    if not x.size or not y.size:
        return float("nan"), float("nan"), float("nan")
    d = float(x.mean() - y.mean())
    terms = [(a.var(ddof=1) / a.size, a.size - 1) for a in (x, y) if a.size > 1]
    var = sum(t for t, _ in terms)
    if not terms or var <= 0:
        return d, float("nan"), float("nan")
    df = var ** 2 / sum(t ** 2 / k for t, k in terms if t > 0)
    half = t_quantile(0.975, df) * math.sqrt(var)
    return d, d - half, d + half


# -------------------------------------------------------------------------- table 1

def efficiency_score(ppl_reduction_pct: float, time_increase_pct: float) -> float:
    """Eq. 4; NaN when the time increase is 0 (or unknown): the ratio is undefined."""
    if not time_increase_pct or math.isnan(time_increase_pct):
        return float("nan")
    return ppl_reduction_pct / time_increase_pct


def table1_from_means(baseline_ppl: float, baseline_time: float,
                      rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Table 1 from already-averaged numbers. ``rows`` hold teacher, n_cells, ppl_mean
    and train_wall_s_mean (the teacher's mean training wall time, seconds).
    ``table1`` calls this, so feeding the paper's own means tests the same path."""
    out = []
    for r in (rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows):
        red = 100.0 * (baseline_ppl - r["ppl_mean"]) / baseline_ppl
        inc = 100.0 * (r["train_wall_s_mean"] - baseline_time) / baseline_time if baseline_time else float("nan")
        out.append({"teacher": r["teacher"], "n_cells": int(r["n_cells"]), "ppl_mean": float(r["ppl_mean"]),
                    "ppl_reduction_pct": red, "time_increase_pct": inc, "score": efficiency_score(red, inc)})
    t = pd.DataFrame(out, columns=TABLE1_COLUMNS)
    t.attrs.update(baseline_ppl=float(baseline_ppl), baseline_train_wall_s=float(baseline_time))
    return t


def table1(runs: pd.DataFrame, wall_column: str = "train_wall_s") -> pd.DataFrame:
    """The paper's Table 1: per teacher, means over all its cells vs the baseline's mean over
    seeds (paper columns first), then 95 % CIs, the Monte Carlo se of the mean PPL
    (√Σse²/n, from the cells' evaluation noise alone) and the mean training time."""
    base = runs[runs["teacher"] == BASELINE]
    if base.empty:
        raise ValueError(f"Table 1 needs a {BASELINE!r} run (no REPA) as reference; none among "
                         f"{len(runs)} runs (cells: {', '.join(map(str, runs['cell'])) or 'none'})")
    repa = runs[runs["teacher"] != BASELINE]
    means = (repa.groupby("teacher", sort=False)
             .agg(n_cells=("cell", "size"), ppl_mean=("test_ppl", "mean"), train_wall_s_mean=(wall_column, "mean"))
             .reset_index())
    b_ppl, b_wall = base["test_ppl"].to_numpy(float), base[wall_column].to_numpy(float)
    t = table1_from_means(b_ppl.mean(), b_wall.mean(), means)
    extra = []
    for teacher in t["teacher"]:
        g = repa[repa["teacher"] == teacher]
        ppl, wall = g["test_ppl"].to_numpy(float), g[wall_column].to_numpy(float)
        _, lo, hi, _ = mean_ci95(ppl)
        _, rlo, rhi = diff_ci95(b_ppl, ppl)
        _, ilo, ihi = diff_ci95(wall, b_wall)
        se = pd.to_numeric(g.get("test_ppl_se", pd.Series(dtype=float)), errors="coerce").to_numpy(float)
        mc = math.sqrt(float(np.sum(se ** 2))) / len(se) if len(se) and np.isfinite(se).all() else float("nan")
        extra.append({"ppl_mean_ci95_lo": lo, "ppl_mean_ci95_hi": hi,
                      "ppl_reduction_pct_ci95_lo": 100.0 * rlo / b_ppl.mean(),
                      "ppl_reduction_pct_ci95_hi": 100.0 * rhi / b_ppl.mean(),
                      "time_increase_pct_ci95_lo": 100.0 * ilo / b_wall.mean() if b_wall.mean() else float("nan"),
                      "time_increase_pct_ci95_hi": 100.0 * ihi / b_wall.mean() if b_wall.mean() else float("nan"),
                      "ppl_mc_se": mc, "train_wall_s_mean": float(wall.mean())})
    t = pd.concat([t, pd.DataFrame(extra, columns=TABLE1_CI_COLUMNS, index=t.index)], axis=1)
    _, blo, bhi, _ = mean_ci95(b_ppl)
    t.attrs.update(baseline_ppl=float(b_ppl.mean()), baseline_train_wall_s=float(b_wall.mean()),
                   baseline_n=len(base), baseline_ppl_ci95_lo=blo, baseline_ppl_ci95_hi=bhi)
    return t


# ------------------------------------------------------------- amortised cache cost

def read_cache_costs(feature_manifests: Iterable[str | os.PathLike]) -> tuple[dict[str, float], list[str]]:
    """Seconds each teacher's feature cache cost: the sum of ``wall_s`` over its split
    manifests (results/teachers/<t>/features/{train,val}.json). A manifest without
    ``wall_s`` counts as 0; each teacher with such manifests yields one warning line."""
    costs: dict[str, float] = {}
    missing: dict[str, list[str]] = {}
    for path in feature_manifests:
        m = read_json_object(path, "feature manifest", rule="teacher_features")
        teacher = str(m.get("teacher") or Path(path).parent.parent.name)
        wall = m.get("wall_s")
        if wall is None:
            missing.setdefault(teacher, []).append(Path(path).stem)
            wall = 0.0
        costs[teacher] = costs.get(teacher, 0.0) + float(wall)
    problems = [f"{t}: feature manifest(s) {', '.join(splits)} have no wall_s; that cache cost is counted as 0 s"
                for t, splits in missing.items()]
    return costs, problems


def amortize_cache_cost(runs: pd.DataFrame, cache_wall_s: Mapping[str, float]) -> pd.DataFrame:
    """Add cache_wall_s (the teacher's whole feature-cache cost), cache_cells (its cells that read
    the cache, all seeds), cache_wall_s_per_cell and train_wall_s_amortized = train_wall_s + the
    cell's share. Online-mode cells and the baseline get no cache cost."""
    r = runs.copy()
    cached = (r["teacher"] != BASELINE) & (r["teacher_features"] == "cached")
    n = r[cached].groupby("teacher")["cell"].transform("size")
    total = r["teacher"].map(lambda t: float(cache_wall_s.get(t, 0.0)))
    r["cache_wall_s"] = np.where(cached, total, 0.0)
    r["cache_cells"] = pd.array(n.reindex(r.index), dtype="Int64")
    r["cache_wall_s_per_cell"] = np.where(cached, r["cache_wall_s"] / n.reindex(r.index), 0.0)
    r["train_wall_s_amortized"] = r["train_wall_s"] + r["cache_wall_s_per_cell"]
    return r


def table1_amortized(runs: pd.DataFrame, cache_wall_s: Mapping[str, float],
                     problems: Iterable[str] = ()) -> pd.DataFrame:
    """Table 1 with each cached cell's training time plus its share of the teacher's feature-cache
    cost; the cache columns say how much was added."""
    r = amortize_cache_cost(runs, cache_wall_s)
    t = table1(r, wall_column="train_wall_s_amortized")
    repa = r[r["teacher"] != BASELINE]
    per = repa.groupby("teacher").agg(cache_wall_s=("cache_wall_s", "max"),
                                      cache_cells=("cache_cells", "max"),
                                      cache_wall_s_per_cell=("cache_wall_s_per_cell", "max"))
    for c in AMORTIZED_COLUMNS:
        t[c] = t["teacher"].map(per[c]).to_numpy()
    t["cache_cells"] = pd.array(t["cache_cells"].fillna(0), dtype="Int64")
    t.attrs.update(amortized=True, cache_problems=list(problems),
                   online_teachers=sorted(set(repa.loc[repa["teacher_features"] == "online", "teacher"])))
    return t


# ---------------------------------------------------------------------- rendering

_BEST = {"ppl_reduction_pct": max, "time_increase_pct": min, "score": max}
_HEADER = ["Teacher", "Cells", "Mean PPL", "95 % CI", "PPL Red. (%)", "95 % CI", "Time Inc. (%)", "Score"]
# (value column, decimals, CI column prefix or None); the CI cells sit right after their value.
_COLUMNS = [("ppl_mean", 2, "ppl_mean"), ("ppl_reduction_pct", 1, "ppl_reduction_pct"),
            ("time_increase_pct", 1, None), ("score", 2, None)]


def _num(v, d: int) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{v:.{d}f}"


def _ci(r: Mapping, prefix: str, d: int) -> str:
    lo, hi = r.get(f"{prefix}_ci95_lo"), r.get(f"{prefix}_ci95_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "–"
    return f"[{lo:.{d}f}, {hi:.{d}f}]"


def _formatted(t: pd.DataFrame) -> tuple[list[list[str]], list[list[bool]]]:
    """Cell strings (paper columns plus CI columns) and bold flags. Best is judged on the
    printed values so ties that look equal are bolded together."""
    cells, kinds = [], []
    for r in t.to_dict("records"):
        row, kind = [str(r["teacher"]), str(r["n_cells"])], [None, None]
        for col, d, ci in _COLUMNS:
            row.append(_num(r.get(col), d))
            kind.append(col)
            if ci:
                row.append(_ci(r, ci, d))
                kind.append(None)
        cells.append(row)
        kinds = kind
    bold = [[False] * len(_HEADER) for _ in cells]
    for j, col in enumerate(kinds):
        if col not in _BEST:
            continue
        vals = [float(row[j]) for row in cells if row[j] != "n/a"]
        if vals:
            best = _BEST[col](vals)
            for i, row in enumerate(cells):
                bold[i][j] = row[j] != "n/a" and float(row[j]) == best
    return cells, bold


def _baseline_note(t: pd.DataFrame) -> str:
    a = t.attrs
    n = a.get("baseline_n", "?")
    ci = ""
    if not pd.isna(a.get("baseline_ppl_ci95_lo", float("nan"))):
        ci = f" (95 % CI [{a['baseline_ppl_ci95_lo']:.2f}, {a['baseline_ppl_ci95_hi']:.2f}])"
    return (f"Baseline (no REPA): mean PPL {a.get('baseline_ppl', float('nan')):.2f}{ci}, "
            f"mean training time {a.get('baseline_train_wall_s', float('nan')):.0f} s ({n} seed(s)). "
            f"Teacher values are means over all its layers, weights and seeds; Score = PPL Red. / Time Inc. "
            f"95 % CI: Student-t interval over the cells' test PPLs (spread across layers, weights and seeds); "
            f"PPL Red. CI by Welch's interval against the baseline"
            f"{' (taken as exact: a single seed)' if n == 1 else ''}.")


def _amortized_notes(t: pd.DataFrame) -> list[str]:
    if not t.attrs.get("amortized"):
        return []
    notes = []
    for r in t.to_dict("records"):
        if r.get("cache_cells"):
            notes.append(f"{r['teacher']}: feature cache {r['cache_wall_s']:.1f} s over {r['cache_cells']} cells "
                         f"= +{r['cache_wall_s_per_cell']:.1f} s per cell")
    lines = ["Training time includes each cell's share of its teacher's feature-cache cost "
             "(the teacher_features jobs' wall_s, split evenly over the teacher's cached cells); "
             "online-mode cells run the teacher inside training and get no cache cost."]
    if notes:
        lines.append("; ".join(notes) + ".")
    if t.attrs.get("online_teachers"):
        lines.append(f"Online mode (no cache cost): {', '.join(t.attrs['online_teachers'])}.")
    lines += [f"WARNING: {p}" for p in t.attrs.get("cache_problems", [])]
    return lines


def table1_markdown(t: pd.DataFrame) -> str:
    cells, bold = _formatted(t)
    esc = lambda s: s.replace("|", r"\|")
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|"]
    for row, b in zip(cells, bold):
        lines.append("| " + " | ".join(f"**{esc(s)}**" if f else esc(s) for s, f in zip(row, b)) + " |")
    notes = [_baseline_note(t)] + _amortized_notes(t)
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def table1_latex(t: pd.DataFrame) -> str:
    cells, bold = _formatted(t)

    def fmt(s: str, j: int, b: bool) -> str:
        s = tex_escape(s).replace("–", "--")
        if j >= 2:
            s = s.replace("[-", "[$-$").replace(", -", ", $-$")
            if s.startswith("-"):
                s = "$-$" + s[1:]  # a real minus sign, not a hyphen
        return rf"\textbf{{{s}}}" if b else s

    header = ["Teacher", "Cells", "Mean PPL", r"95\,\% CI", r"PPL Red.\ (\%)", r"95\,\% CI", r"Time Inc.\ (\%)",
              "Score"]
    a = t.attrs
    lines = [f"% {tex_escape(line)}" for line in [_baseline_note(t)] + _amortized_notes(t)]
    lines += [r"\begin{tabular}{lrrrrrrr}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    if "baseline_ppl" in a:
        ci = (f"[{a['baseline_ppl_ci95_lo']:.2f}, {a['baseline_ppl_ci95_hi']:.2f}]"
              if not pd.isna(a.get("baseline_ppl_ci95_lo", float("nan"))) else "--")
        lines += [rf"Baseline (no REPA) & {a.get('baseline_n', '')} & {a['baseline_ppl']:.2f} & {ci} & -- & -- & -- & -- \\",
                  r"\midrule"]
    lines += [" & ".join(fmt(s, j, b) for j, (s, b) in enumerate(zip(row, bl))) + r" \\"
              for row, bl in zip(cells, bold)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def table1_html(t: pd.DataFrame, title: str) -> str:
    """A self-contained page for the Snakemake report (which shows HTML inline, not markdown)."""
    cells, bold = _formatted(t)
    a = t.attrs
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEADER)
    body = []
    if "baseline_ppl" in a:
        ci = (f"[{a['baseline_ppl_ci95_lo']:.2f}, {a['baseline_ppl_ci95_hi']:.2f}]"
              if not pd.isna(a.get("baseline_ppl_ci95_lo", float("nan"))) else "–")
        body.append(f"<tr class='base'><td>Baseline (no REPA)</td><td>{a.get('baseline_n', '')}</td>"
                    f"<td>{a['baseline_ppl']:.2f}</td><td>{ci}</td>" + "<td>–</td>" * 4 + "</tr>")
    for row, bl in zip(cells, bold):
        body.append("<tr>" + "".join(f"<td>{'<b>' + esc(s) + '</b>' if b else esc(s)}</td>"
                                     for s, b in zip(row, bl)) + "</tr>")
    notes = "".join(f"<p>{esc(n)}</p>" for n in [_baseline_note(t)] + _amortized_notes(t))
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
             "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
             "th:first-child,td:first-child{text-align:left}tr.base td{color:#555;font-style:italic}"
             "p{max-width:60em;color:#333}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{style}</style></head><body><h3>{esc(title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{notes}</body></html>\n")


def _table_files(t: pd.DataFrame, out: Path, stem: str, title: str) -> list[Path]:
    return [
        atomic_write(out / f"{stem}.csv", lambda p: t.to_csv(p, index=False)),
        atomic_write_text(out / f"{stem}.md", table1_markdown(t)),
        atomic_write_text(out / f"{stem}.tex", table1_latex(t)),
        atomic_write_text(out / f"{stem}.html", table1_html(t, title)),
    ]


def write_tables(runs: pd.DataFrame, out_dir: str | os.PathLike,
                 feature_manifests: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """runs.parquet/.csv (all cells), Table 1 and its amortised variant as .csv, .md, .tex and
    .html, each written atomically. ``feature_manifests`` are the teachers' feature .json files
    (their ``wall_s`` is the cache cost); none given: no cache cost, and the table says so."""
    out = Path(out_dir)
    manifests = list(feature_manifests)
    costs, problems = read_cache_costs(manifests)
    if not manifests and (runs["teacher_features"] == "cached").any():
        problems.append("no teacher feature manifests given; cache cost counted as 0 s")
    for p in problems:
        warnings.warn(p)
    t = table1(runs)
    ta = table1_amortized(runs, costs, problems)
    runs_out = amortize_cache_cost(runs, costs) if (runs["teacher"] != BASELINE).any() else runs
    return [
        atomic_write(out / "runs.parquet", lambda p: runs_out.to_parquet(p, index=False)),
        atomic_write(out / "runs.csv", lambda p: runs_out.to_csv(p, index=False)),
        *_table_files(t, out, "table1", "Table 1: REPA teachers vs the baseline"),
        *_table_files(ta, out, "table1_amortized",
                      "Table 1 (amortised): training time including the teacher-feature cache"),
    ]


def aggregate_main(metrics: list[str], out_dir: str | os.PathLike, features: Iterable[str] = ()) -> list[Path]:
    """What `repa-mdlm aggregate` does."""
    return write_tables(collect_runs(metrics), out_dir, features)
