"""The paper's Table 1 from the runs table, and its amortised variant.

Table 1 (Section 5.3) compares each teacher with the baseline using *means over
all of the teacher's cells* (every layer, weight and seed), not its best cell:

    PPL Red. %  = 100 * (baseline_ppl - teacher_mean_ppl) / baseline_ppl
    Time Inc. % = 100 * (teacher_mean_step_s - baseline_step_s) / baseline_step_s
    Score       = PPL Red. % / Time Inc. %          (Eq. 4, on the point estimates)

The time is ``step_seconds``, the optimisation steps alone (runs.TIMING_KEYS), and the increase is
paired by seed: each REPA cell minus its own seed's baseline, which removes what differs between
seeds (``paired_time_increase``). Load from other work on the machine is not removed, only measured:
it widens the interval over the seeds, unless a seed's cells ran side by side.

Next to the paper's columns, the mean PPL carries a 95 % Student-t interval over the cells' test
PPLs (the spread across layers, weights and seeds, descriptive). The PPL reduction and the time
increase are both paired by seed (``paired_change``): a Student-t interval over the seeds' mean
differences from their own baseline, none with a single seed. ``ppl_mc_se`` is the Monte Carlo part
alone of the mean PPL's error (from the cells' test_ppl_mc_se), not the data-plus-Monte-Carlo
test_ppl_se.

``table1_amortized`` is the same table with each cached-feature cell's training time
increased by its share of the teacher's feature-cache cost (the teacher_features jobs'
``wall_s``), so cached and online REPA are compared on equal terms.

No torch and no matplotlib, so the Snakefile's aggregation rule stays light.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..analysis.runs import baseline_runs, collect_runs, is_baseline, repa_runs
from ..analysis.stats import mean_ci95
from ..config import BASELINE, TOKENWISE_TAG, arm_label, feature_source
from ..io import DataError, atomic_write, atomic_write_text, read_json_object, rebuild_command
from ..layout import METRICS, RUNS_TABLE_FILES, TABLE_VARIANTS, run_dir
from .render import table1_html, table1_latex, table1_markdown

# The paper's columns, in the paper's order; CI and cost columns come after them.
TABLE1_COLUMNS = ["teacher", "n_cells", "ppl_mean", "ppl_reduction_pct", "time_increase_pct", "score"]
TABLE1_CI_COLUMNS = ["ppl_mean_ci95_lo", "ppl_mean_ci95_hi", "ppl_reduction_pct_ci95_lo", "ppl_reduction_pct_ci95_hi",
                     "time_increase_pct_ci95_lo", "time_increase_pct_ci95_hi", "time_n_seeds", "ppl_mc_se",
                     "step_seconds_mean"]
AMORTIZED_COLUMNS = ["cache_wall_s", "cache_cells", "cache_wall_s_per_cell"]


def efficiency_score(ppl_reduction_pct: float, time_increase_pct: float) -> float:
    """Eq. 4; NaN when the time increase is 0 (or unknown): the ratio is undefined."""
    if not time_increase_pct or math.isnan(time_increase_pct):
        return float("nan")
    return ppl_reduction_pct / time_increase_pct


def table1_from_means(baseline_ppl: float, baseline_time: float,
                      rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Table 1 from already-averaged numbers. ``rows`` hold teacher, n_cells, ppl_mean and either
    time_increase_pct (``table1`` passes the paired one) or train_wall_s_mean (the teacher's mean
    training time, seconds, against ``baseline_time``: the paper's unpaired means).
    ``table1`` calls this, so feeding the paper's own means tests the same path."""
    out = []
    for r in (rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows):
        red = 100.0 * (baseline_ppl - r["ppl_mean"]) / baseline_ppl
        inc = r.get("time_increase_pct")
        if inc is None:
            inc = (100.0 * (r["train_wall_s_mean"] - baseline_time) / baseline_time if baseline_time
                   else float("nan"))
        out.append({"teacher": r["teacher"], "n_cells": int(r["n_cells"]), "ppl_mean": float(r["ppl_mean"]),
                    "ppl_reduction_pct": red, "time_increase_pct": inc, "score": efficiency_score(red, inc)})
    t = pd.DataFrame(out, columns=TABLE1_COLUMNS)
    t.attrs.update(baseline_ppl=float(baseline_ppl), baseline_train_wall_s=float(baseline_time))
    return t


def paired_change(cells: pd.DataFrame, base: pd.DataFrame, column: str) -> tuple[float, float, float, int]:
    """One teacher's change in ``column``, in % of the baseline, paired by seed: each cell minus its own
    seed's baseline, averaged within the seed (the cells of a seed share that one baseline run, so they are
    not independent pairs), then over seeds; relative to the baseline's mean over the same seeds. With every
    cell present the estimate is 100 * (teacher's mean - baseline's mean) / baseline's mean. The 95 %
    interval is Student-t over the seeds' mean differences (n_seeds - 1 df; NaN with one seed); cells whose
    seed has no baseline are left out. Returns (change %, lo, hi, n_seeds)."""
    b = base.dropna(subset=[column]).groupby("seed")[column].mean()
    g = cells[cells["seed"].isin(b.index)].dropna(subset=[column])
    per_seed = (g[column] - g["seed"].map(b)).groupby(g["seed"]).mean()
    mean, lo, hi, n = mean_ci95(per_seed)
    ref = float(b.loc[per_seed.index].mean()) if n else float("nan")
    scale = 100.0 / ref if ref else float("nan")
    return mean * scale, lo * scale, hi * scale, n


def paired_time_increase(cells: pd.DataFrame, base: pd.DataFrame, column: str = "step_seconds") -> dict:
    """One teacher's Time Inc. % from ``column`` (``paired_change``). Keys: time_increase_pct, its
    _ci95_lo/_hi, time_n_seeds."""
    inc, lo, hi, n = paired_change(cells, base, column)
    return {"time_increase_pct": inc, "time_increase_pct_ci95_lo": lo, "time_increase_pct_ci95_hi": hi,
            "time_n_seeds": n}


def _mc_se(g: pd.DataFrame) -> float:
    """The Monte Carlo standard error of a teacher's mean PPL, √Σse²/n over its cells' test_ppl_mc_se (the
    diffusion times and masks alone, the test set held fixed; not the data-plus-Monte-Carlo test_ppl_se).
    NaN when a cell's is unknown (metrics written before test_nelbo_mc_se was recorded)."""
    se = pd.to_numeric(g.get("test_ppl_mc_se", pd.Series(dtype=float)), errors="coerce").to_numpy(float)
    return math.sqrt(float(np.sum(se ** 2))) / len(se) if len(se) and np.isfinite(se).all() else float("nan")


def _teacher_intervals(g: pd.DataFrame, base: pd.DataFrame, time_column: str) -> dict:
    """One teacher's CI and cost columns of Table 1 (TABLE1_CI_COLUMNS, and its paired time increase).
    A reduction is minus the paired change in test PPL, so its interval is that change's, negated."""
    _, lo, hi, _ = mean_ci95(g["test_ppl"].to_numpy(float))
    _, change_lo, change_hi, _ = paired_change(g, base, "test_ppl")
    return {"ppl_mean_ci95_lo": lo, "ppl_mean_ci95_hi": hi,
            "ppl_reduction_pct_ci95_lo": -change_hi, "ppl_reduction_pct_ci95_hi": -change_lo,
            **paired_time_increase(g, base, time_column), "ppl_mc_se": _mc_se(g),
            "step_seconds_mean": float(g[time_column].mean())}


def check_table1_inputs(runs: pd.DataFrame, time_column: str = "step_seconds") -> None:
    """Every number Table 1 is computed from, per cell: its test PPL and its time must be finite and > 0.
    (read_metrics refuses such a metrics.json first; this also guards a runs table built otherwise and
    the amortised time.) A NaN left in Table 1 then only ever means "not defined": an interval of one
    seed, a score over a zero time increase, a Monte Carlo error that evaluation could not estimate."""
    for column, rule in (("test_ppl", "evaluate"), (time_column, "train")):
        values = pd.to_numeric(runs[column], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            cell = runs["cell"].iloc[i]
            target = f"{run_dir('<results_dir>', cell)}/{METRICS}"
            raise DataError(f"Table 1: cell {cell}'s {column} = {runs[column].iloc[i]} is not a finite number > 0. "
                            f"Rebuild what it comes from with {rebuild_command(target, rule)}")


def table1(runs: pd.DataFrame, time_column: str = "step_seconds") -> pd.DataFrame:
    """The paper's Table 1: per teacher, means over all its cells vs the baseline's mean over
    seeds (paper columns first; Time Inc. paired by seed on ``time_column``), then 95 % CIs, the
    Monte Carlo se of the mean PPL (``_mc_se``) and the mean time in optimisation steps. Its inputs
    are checked first (``check_table1_inputs``)."""
    check_table1_inputs(runs, time_column)
    base = baseline_runs(runs)
    if base.empty:
        raise ValueError(f"Table 1 needs a {BASELINE!r} run (no REPA) as reference; none among "
                         f"{len(runs)} runs (cells: {', '.join(map(str, runs['cell'])) or 'none'})")
    repa = repa_runs(runs)
    means = (repa.groupby("teacher", sort=False)
             .agg(n_cells=("cell", "size"), ppl_mean=("test_ppl", "mean")).reset_index())
    extra = [_teacher_intervals(repa[repa["teacher"] == teacher], base, time_column)
             for teacher in means["teacher"]]
    means["time_increase_pct"] = [e["time_increase_pct"] for e in extra]
    b_ppl, b_time = base["test_ppl"].to_numpy(float), float(base[time_column].mean())
    t = table1_from_means(b_ppl.mean(), b_time, means)
    t = pd.concat([t, pd.DataFrame(extra, columns=TABLE1_CI_COLUMNS, index=t.index)], axis=1)
    _, blo, bhi, _ = mean_ci95(b_ppl)
    unpaired = repa.loc[~repa["seed"].isin(base["seed"]), "cell"].tolist()
    t.attrs.update(baseline_ppl=float(b_ppl.mean()), baseline_step_seconds=b_time, baseline_n=len(base),
                   baseline_ppl_ci95_lo=blo, baseline_ppl_ci95_hi=bhi, time_unpaired_cells=unpaired)
    return t


# ------------------------------------------------------------- amortised cache cost

def read_cache_costs(feature_manifests: Iterable[str | os.PathLike]) -> tuple[dict[str, float], list[str]]:
    """Seconds each teacher's feature cache cost: the sum of ``wall_s`` over its split
    manifests (results/teachers/<t>/features/{train,val}.json). A manifest without
    ``wall_s`` counts as 0; each teacher with such manifests yields one warning line. A ``wall_s`` that
    is not a finite number >= 0 is a DataError naming the manifest."""
    costs: dict[str, float] = {}
    missing: dict[str, list[str]] = {}
    for path in feature_manifests:
        m = read_json_object(path, "feature manifest", rule="teacher_features")
        teacher = str(m.get("teacher") or Path(path).parent.parent.name)
        feature_rule = "teacher_span_features" if m.get("alignment") == "tokenwise" else "teacher_features"
        if m.get("alignment") == "tokenwise":  # its own cache, shared by the teacher's token-wise cells
            teacher = feature_source(arm_label(teacher, TOKENWISE_TAG))
        wall = m.get("wall_s")
        if wall is None:
            missing.setdefault(teacher, []).append(Path(path).stem)
            wall = 0.0
        elif isinstance(wall, bool) or not isinstance(wall, (int, float)) or not (math.isfinite(wall) and wall >= 0):
            raise DataError(f"{path}: wall_s = {wall!r} is not a finite number of seconds >= 0, so the amortised "
                            f"Table 1 cannot count the cache's cost. Rebuild the cache with "
                            f"{rebuild_command(path, feature_rule)}")
        costs[teacher] = costs.get(teacher, 0.0) + float(wall)
    problems = [f"{t}: feature manifest(s) {', '.join(splits)} have no wall_s; that cache cost is counted as 0 s"
                for t, splits in missing.items()]
    return costs, problems


def amortize_cache_cost(runs: pd.DataFrame, cache_wall_s: Mapping[str, float]) -> pd.DataFrame:
    """Add cache_wall_s (the teacher's whole feature-cache cost), cache_cells (its cells that read
    the cache, all seeds), cache_wall_s_per_cell, and step_seconds_amortized: step_seconds + the cell's
    share. Online-mode cells and the baseline get no cache cost."""
    r = runs.copy()
    cached = ~is_baseline(r) & (r["teacher_features"] == "cached")
    source = r["teacher"].map(feature_source)
    n = r[cached].groupby(source[cached])["cell"].transform("size")
    total = source.map(lambda t: float(cache_wall_s.get(t, 0.0)))
    r["cache_wall_s"] = np.where(cached, total, 0.0)
    r["cache_cells"] = pd.array(n.reindex(r.index), dtype="Int64")
    r["cache_wall_s_per_cell"] = np.where(cached, r["cache_wall_s"] / n.reindex(r.index), 0.0)
    r["step_seconds_amortized"] = r["step_seconds"] + r["cache_wall_s_per_cell"]
    return r


def table1_amortized(runs: pd.DataFrame, cache_wall_s: Mapping[str, float],
                     problems: Iterable[str] = ()) -> pd.DataFrame:
    """Table 1 with each cached cell's training time plus its share of the teacher's feature-cache
    cost; the cache columns say how much was added."""
    r = amortize_cache_cost(runs, cache_wall_s)
    t = table1(r, time_column="step_seconds_amortized")
    repa = repa_runs(r)
    per = repa.groupby("teacher").agg(cache_wall_s=("cache_wall_s", "max"),
                                      cache_cells=("cache_cells", "max"),
                                      cache_wall_s_per_cell=("cache_wall_s_per_cell", "max"))
    for c in AMORTIZED_COLUMNS:
        t[c] = t["teacher"].map(per[c]).to_numpy()
    t["cache_cells"] = pd.array(t["cache_cells"].fillna(0), dtype="Int64")
    t.attrs.update(amortized=True, cache_problems=list(problems),
                   online_teachers=sorted(set(repa.loc[repa["teacher_features"] == "online", "teacher"])))
    return t


# ------------------------------------------------------------------------- files

def _table_files(t: pd.DataFrame, out: Path, stem: str, title: str) -> list[Path]:
    return [
        atomic_write(out / f"{stem}.csv", lambda p: t.to_csv(p, index=False)),
        atomic_write_text(out / f"{stem}.md", table1_markdown(t)),
        atomic_write_text(out / f"{stem}.tex", table1_latex(t)),
        atomic_write_text(out / f"{stem}.html", table1_html(t, title)),
    ]


def write_tables(runs: pd.DataFrame, out_dir: str | os.PathLike,
                 feature_manifests: Iterable[str | os.PathLike] = (), halving_note: str = "") -> list[Path]:
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
    t.attrs["halving_note"] = ta.attrs["halving_note"] = halving_note  # which cells reached the end
    runs_out = amortize_cache_cost(runs, costs) if not repa_runs(runs).empty else runs
    runs_parquet, runs_csv = RUNS_TABLE_FILES
    plain, amortized = TABLE_VARIANTS
    return [
        atomic_write(out / runs_parquet, lambda p: runs_out.to_parquet(p, index=False)),
        atomic_write(out / runs_csv, lambda p: runs_out.to_csv(p, index=False)),
        *_table_files(t, out, plain, "Table 1: REPA teachers vs the baseline"),
        *_table_files(ta, out, amortized,
                      "Table 1 (amortised): training time including the teacher-feature cache"),
    ]


def aggregate_main(metrics: list[str], out_dir: str | os.PathLike, features: Iterable[str],
                   halving: str | None = None) -> list[Path]:
    """What `repa-mdlm aggregate` does (its options and defaults: cli.aggregate): the tables, then the
    sweep's provenance from the train_summary.json beside each metrics.json (when there are any).
    halving: tables/halving.csv of a halving sweep, whose stopped cells Table 1 counts in a note."""
    from .halving_report import table1_note
    from .provenance import write_sweep_provenance

    note = table1_note(halving) if halving else ""
    return write_tables(collect_runs(metrics), out_dir, features, note) + write_sweep_provenance(metrics, out_dir)
