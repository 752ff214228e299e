"""Paired by seed: each REPA configuration against the baseline on any per-cell metric, and the one
routine every paired family of the verdict is built with (`paired_family`; controls.py uses it for
each teacher against its random twin).

Cells of one seed share the student's initial weights, the data order, the diffusion times and
the masks, and are scored on the same test noise and the same sampler seed. For each REPA
configuration (teacher, layer, weight) the per-seed differences d_s = metric(cell, s) -
metric(baseline, s) get a Student-t 95 % interval with n_seeds - 1 degrees of freedom; a
configuration differs from the baseline (raw, `outcome`) when that whole interval excludes zero.
Each metric's configurations are one family, corrected by Holm (correction.py): p, p_holm, the
adjusted interval diff_lo_adj / diff_hi_adj and `outcome_adjusted`, which is what the verdict claims.
Table 1's test PPL (`paired_differences`, the primary family), the generative perplexity, the
samples' entropy and each zero-shot set's PPL (`paired_metric`) are each one family.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import BASELINE
from .beyond import collect_generative, collect_zero_shot
from .correction import METHOD, outcome_words, with_holm
from .format import interval, number
from .runs import repa_runs
from .stats import mean_ci95


def interval_sign(lo: float, hi: float, n: int) -> int:
    """-1 / +1 when the comparison's interval lies wholly below / above zero, else 0 (also without one)."""
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return 0
    return -1 if hi < 0 else 1 if lo > 0 else 0


def outcome(lo: float, hi: float, n: int, below: str, above: str) -> str:
    """The raw outcome of one comparison from its 95 % interval: ``below`` / ``above`` the reference
    when the interval excludes zero (``interval_sign``)."""
    has_interval = n >= 2 and bool(np.isfinite(lo) and np.isfinite(hi))
    return outcome_words(interval_sign(lo, hi, n), has_interval, below, above)


def paired_family(comparisons: list[tuple[dict, pd.Series, pd.Series, tuple[str, str]]],
                  label_columns: list[str]) -> pd.DataFrame:
    """One family of paired comparisons, one row each, Holm-corrected together (correction.with_holm).

    Each comparison is (labels, treated, reference, (below, above)): the treated and reference
    values indexed by seed (paired on the seeds both have), and the words of its outcome. Columns:
    label_columns (the labels' keys), n_seeds, seeds, treated_mean, reference_mean, diff_mean, diff_lo, diff_hi (95 %
    Student-t over the seeds' differences), diff_sd, diff_pct, diff_pct_lo, diff_pct_hi (relative to
    the reference's mean), outcome, raw_sign (-1 / 0 / +1: interval_sign), then Holm's columns (holm_sign
    is what every claim reads)."""
    rows, all_diffs = [], []
    for labels, treated, reference, words in comparisons:
        treated, reference = treated.dropna(), reference.dropna()
        seeds = sorted(set(treated.index) & set(reference.index))
        diffs = treated.loc[seeds].to_numpy(float) - reference.loc[seeds].to_numpy(float)
        mean, lo, hi, n = mean_ci95(diffs)
        ref = float(reference.loc[seeds].mean()) if seeds else float("nan")
        all_diffs.append(diffs)
        rows.append({**labels, "n_seeds": n, "seeds": " ".join(str(int(s)) for s in seeds),
                     "treated_mean": float(treated.loc[seeds].mean()) if seeds else float("nan"),
                     "reference_mean": ref, "diff_mean": mean, "diff_lo": lo, "diff_hi": hi,
                     "diff_sd": float(np.std(diffs, ddof=1)) if n > 1 else float("nan"),
                     "diff_pct": 100.0 * mean / ref, "diff_pct_lo": 100.0 * lo / ref, "diff_pct_hi": 100.0 * hi / ref,
                     "outcome": outcome(lo, hi, n, *words), "raw_sign": interval_sign(lo, hi, n)})
    table = pd.DataFrame(rows, columns=label_columns + [
        "n_seeds", "seeds", "treated_mean", "reference_mean", "diff_mean", "diff_lo", "diff_hi", "diff_sd",
        "diff_pct", "diff_pct_lo", "diff_pct_hi", "outcome", "raw_sign"])
    return with_holm(table, all_diffs, words=[c[3] for c in comparisons])


def _against_baseline(cells: pd.DataFrame, metric: str, words: tuple[str, str]) -> pd.DataFrame:
    base = cells[cells["teacher"] == BASELINE].set_index("seed")[metric]
    comparisons = [({"teacher": teacher, "layer": int(layer), "weight": float(weight)},
                    g.set_index("seed")[metric], base, words)
                   for (teacher, layer, weight), g in repa_runs(cells).groupby(["teacher", "layer", "weight"],
                                                                               sort=True)]
    return paired_family(comparisons, ["teacher", "layer", "weight"])


def paired_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1's test PPL, each REPA configuration (teacher, layer, weight) minus the baseline, paired by
    seed: paired_family's columns, with treated_mean and reference_mean named ppl_mean and
    reference_ppl_mean; outcomes "better / worse than the baseline"."""
    return _against_baseline(runs, "test_ppl", ("better than the baseline", "worse than the baseline")).rename(
        columns={"treated_mean": "ppl_mean", "reference_mean": "reference_ppl_mean"})


def paired_metric(cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Any per-cell metric, each REPA configuration minus the baseline, paired by seed (paired_family's
    columns; outcomes "below / above the baseline", since lower is not always better)."""
    return _against_baseline(cells, metric, ("below the baseline", "above the baseline"))


def beyond_metrics(runs: pd.DataFrame, generative: list[str], zero_shot: list[str]) -> pd.DataFrame | None:
    """One row per cell of the runs table with its generative metrics and its PPL on each zero-shot set."""
    if not generative and not zero_shot:
        return None
    cells = runs[["cell", "teacher", "layer", "weight", "seed"]]
    if generative:
        cells = cells.merge(collect_generative(generative)[["cell", "gen_ppl", "entropy"]], on="cell", how="left")
    if zero_shot:
        wide = collect_zero_shot(zero_shot).pivot(index="cell", columns="test_set", values="test_ppl")
        cells = cells.merge(wide.add_prefix("zero_shot:").reset_index(), on="cell", how="left")
    return cells


BEYOND_METRICS = {"gen_ppl": "gen. PPL (judge)", "entropy": "sample entropy (nats)"}
"""The generative metrics of the verdict's last table; zero-shot sets add one column each."""


def beyond_labels(cells: pd.DataFrame | None) -> dict[str, str]:
    """The metrics beyond Table 1's PPL that were measured, each with its label: one family each."""
    if cells is None:
        return {}
    metrics = {m: label for m, label in BEYOND_METRICS.items() if m in cells and cells[m].notna().any()}
    metrics.update({c: f"PPL on {c.removeprefix('zero_shot:')}" for c in cells if c.startswith("zero_shot:")})
    return metrics


def metric_families(paired: pd.DataFrame, cells: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Every family of the sweep, by metric: Table 1's test PPL (``paired``, the primary family) and
    each metric beyond it that was measured (paired_metric of ``cells``)."""
    return {"test_ppl": paired, **{m: paired_metric(cells, m) for m in beyond_labels(cells)}}


def beyond_test_ppl(cells: pd.DataFrame) -> list[str]:
    """The verdict's section on the metrics beyond Table 1: per configuration, the paired difference
    from the baseline of each one that was measured (generative, zero-shot), with its Holm p-value."""
    metrics = beyond_labels(cells)
    if not metrics:
        return []
    tables = {m: paired_metric(cells, m).set_index(["teacher", "layer", "weight"]) for m in metrics}
    configs = next(iter(tables.values())).index
    lines = ["## Beyond Table 1's perplexity: generation and other corpora", "",
             "Each configuration minus the baseline, paired by seed, with its raw 95 % interval and its "
             f"{METHOD}-adjusted p-value (each metric's configurations are one family; **bold**: the "
             f"difference survives {METHOD}'s correction). Read gen. PPL beside entropy: a sampler that repeats "
             "itself lowers both; tables/generative.md and tables/zero_shot.md hold the means.", "",
             "| teacher | layer | λ | " + " | ".join(f"Δ {label}" for label in metrics.values()) + " |",
             "|---|---:|---:|" + "---:|" * len(metrics)]
    for teacher, layer, weight in configs:
        row = [tables[m].loc[(teacher, layer, weight)] for m in metrics]
        lines.append(f"| {teacher} | {layer} | {weight:.2f} | " + " | ".join(_beyond_cell(r) for r in row) + " |")
    return lines + [""]


def _beyond_cell(r) -> str:
    text = f"{number(r.diff_mean, 2, True)} {interval(r.diff_lo, r.diff_hi, 2, True)}"
    if not np.isfinite(r.p_holm):
        return text
    survives = r.holm_sign != 0
    return f"**{text}**, p_Holm {r.p_holm:.3g}" if survives else f"{text}, p_Holm {r.p_holm:.3g}"
