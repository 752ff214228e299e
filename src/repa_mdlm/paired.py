"""Paired by seed: each REPA configuration against the baseline (or a teacher against its random
control), on any per-cell metric.

Cells of one seed share the student's initial weights, the data order, the diffusion times and
the masks, and are scored on the same test noise and the same sampler seed. For each REPA
configuration (teacher, layer, weight) the per-seed differences d_s = metric(cell, s) -
metric(baseline, s) get a Student-t 95 % interval with n_seeds - 1 degrees of freedom; a
configuration differs from the baseline only when that whole interval excludes zero.
Table 1's test PPL, the generative perplexity, the samples' entropy and each zero-shot set's PPL
all go through `paired_metric`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import BASELINE
from .render import interval, number
from .runs import repa_runs
from .stats import mean_ci95


def _outcome(lo: float, hi: float, n: int) -> str:
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval (fewer than 2 paired seeds)"
    if hi < 0:
        return "better than the baseline"
    if lo > 0:
        return "worse than the baseline"
    return "no detectable difference"


def paired_differences(runs: pd.DataFrame, reference: str = BASELINE) -> pd.DataFrame:
    """One row per REPA configuration: test PPL minus the reference's, paired by seed.

    Columns: teacher, layer, weight, n_seeds, seeds, ppl_mean, reference_ppl_mean, diff_mean,
    diff_lo, diff_hi (95 % Student-t over the seeds' differences), diff_sd, diff_pct (and
    its interval, relative to the reference's mean), outcome.
    """
    base = runs[runs["teacher"] == reference].set_index("seed")["test_ppl"]
    rows = []
    for (teacher, layer, weight), g in repa_runs(runs).groupby(["teacher", "layer", "weight"], sort=True):
        if teacher == reference:
            continue
        g = g[g["seed"].isin(base.index)].sort_values("seed")
        seeds = g["seed"].astype(int).tolist()
        diffs = g["test_ppl"].to_numpy(float) - base.loc[seeds].to_numpy(float)
        mean, lo, hi, n = mean_ci95(diffs)
        ref = float(base.loc[seeds].mean()) if seeds else float("nan")
        rows.append({
            "teacher": teacher, "layer": int(layer), "weight": float(weight), "n_seeds": n,
            "seeds": " ".join(map(str, seeds)), "ppl_mean": float(g["test_ppl"].mean()),
            "reference_ppl_mean": ref, "diff_mean": mean, "diff_lo": lo, "diff_hi": hi,
            "diff_sd": float(np.std(diffs, ddof=1)) if n > 1 else float("nan"),
            "diff_pct": 100.0 * mean / ref, "diff_pct_lo": 100.0 * lo / ref, "diff_pct_hi": 100.0 * hi / ref,
            "outcome": _outcome(lo, hi, n),
        })
    return pd.DataFrame(rows, columns=[
        "teacher", "layer", "weight", "n_seeds", "seeds", "ppl_mean", "reference_ppl_mean", "diff_mean",
        "diff_lo", "diff_hi", "diff_sd", "diff_pct", "diff_pct_lo", "diff_pct_hi", "outcome"])


def control_differences(runs: pd.DataFrame, teacher: str, control: str) -> pd.DataFrame:
    """The pretrained teacher's cells minus the random-init control's, paired by (layer, weight, seed)."""
    pairs = runs[runs["teacher"].isin([teacher, control])]
    wide = pairs.pivot_table(index=["layer", "weight", "seed"], columns="teacher", values="test_ppl")
    if teacher not in wide or control not in wide:
        return pd.DataFrame(columns=["layer", "weight", "n_seeds", "diff_mean", "diff_lo", "diff_hi", "outcome"])
    wide = wide.dropna()
    rows = []
    for (layer, weight), g in wide.groupby(level=["layer", "weight"]):
        mean, lo, hi, n = mean_ci95(g[teacher] - g[control])
        outcome = _outcome(lo, hi, n).replace("the baseline", f"the {control} control")
        rows.append({"layer": int(layer), "weight": float(weight), "n_seeds": n,
                     "diff_mean": mean, "diff_lo": lo, "diff_hi": hi, "outcome": outcome})
    return pd.DataFrame(rows)


def paired_metric(cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per REPA configuration: the metric's difference from the baseline, paired by seed
    (teacher, layer, weight, n_seeds, diff_mean, diff_lo, diff_hi, diff_pct, outcome)."""
    base = cells[cells["teacher"] == BASELINE].set_index("seed")[metric].dropna()
    rows = []
    for (teacher, layer, weight), g in repa_runs(cells).groupby(["teacher", "layer", "weight"], sort=True):
        g = g[g["seed"].isin(base.index) & g[metric].notna()].sort_values("seed")
        seeds = g["seed"].astype(int).tolist()
        mean, lo, hi, n = mean_ci95(g[metric].to_numpy(float) - base.loc[seeds].to_numpy(float))
        ref = float(base.loc[seeds].mean()) if seeds else float("nan")
        rows.append({"teacher": teacher, "layer": int(layer), "weight": float(weight), "n_seeds": n,
                     "diff_mean": mean, "diff_lo": lo, "diff_hi": hi, "diff_pct": 100.0 * mean / ref,
                     "outcome": _outcome(lo, hi, n).replace("better than", "below").replace("worse than", "above")})
    return pd.DataFrame(rows, columns=["teacher", "layer", "weight", "n_seeds", "diff_mean", "diff_lo", "diff_hi",
                                       "diff_pct", "outcome"])


BEYOND_METRICS = {"gen_ppl": "gen. PPL (judge)", "entropy": "sample entropy (nats)"}
"""The generative metrics of the verdict's last table; zero-shot sets add one column each."""


def beyond_test_ppl(cells: pd.DataFrame) -> list[str]:
    """The verdict's section on the metrics beyond Table 1: per configuration, the paired difference
    from the baseline of each one that was measured (generative, zero-shot)."""
    metrics = {m: label for m, label in BEYOND_METRICS.items() if m in cells and cells[m].notna().any()}
    metrics.update({c: f"PPL on {c.removeprefix('zero_shot:')}" for c in cells if c.startswith("zero_shot:")})
    if not metrics:
        return []
    tables = {m: paired_metric(cells, m).set_index(["teacher", "layer", "weight"]) for m in metrics}
    configs = next(iter(tables.values())).index
    lines = ["## Beyond Table 1's perplexity: generation and other corpora", "",
             "Each configuration minus the baseline, paired by seed, with a 95 % interval (read gen. PPL "
             "beside entropy: a sampler that repeats itself lowers both; tables/generative.md and "
             "tables/zero_shot.md hold the means).", "",
             "| teacher | layer | λ | " + " | ".join(f"Δ {label}" for label in metrics.values()) + " |",
             "|---|---:|---:|" + "---:|" * len(metrics)]
    for teacher, layer, weight in configs:
        row = [tables[m].loc[(teacher, layer, weight)] for m in metrics]
        lines.append(f"| {teacher} | {layer} | {weight:.2f} | " + " | ".join(
            f"{number(r.diff_mean, 2, True)} {interval(r.diff_lo, r.diff_hi, 2, True)}" for r in row) + " |")
    return lines + [""]
