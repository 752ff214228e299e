"""Multiple comparisons: Holm's step-down correction over a family of paired comparisons.

A family is every REPA configuration of a sweep against the baseline on one metric (Table 1's test
PPL is the primary family; gen. PPL, entropy and each zero-shot set are a family each). With m
configurations that have a p-value (at least 2 paired seeds), sorted p_(1) <= ... <= p_(m), Holm
tests p_(i) at level alpha / (m - i + 1) and stops at the first step k that fails; the adjusted
p-value is max_{j <= i} min(1, (m - j + 1) p_(j)), and a configuration survives when it is <= alpha.

The adjusted interval of each configuration is its paired Student-t interval at the level at which
Holm tests it: 1 - alpha / (m - i + 1) for the steps Holm passes (i < k), and 1 - alpha / (m - k + 1),
the level of the step that stopped it, for the rest. It excludes zero exactly when the configuration
survives Holm, is never narrower than the raw 95 % interval, and never wider than Bonferroni's
(1 - alpha / m). These step-level intervals agree with Holm's decisions; unlike Bonferroni's they are
not simultaneous confidence intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import mean_ci, paired_t_p

ALPHA = 0.05
"""Family-wise error rate: the corrected intervals and decisions hold at 95 % for the whole family."""
METHOD = "Holm"


def holm_adjust(p_values) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p[i]))
        out[i] = running
    return out


def holm_levels(p_values, alpha: float = ALPHA) -> np.ndarray:
    """The level (alpha / (m - s + 1)) at which Holm's step-down tests each hypothesis: its own step s
    while the steps before it all passed, else the step that stopped the procedure (NaN: no p-value)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    stopped = None
    for step, i in enumerate(order):
        level = alpha / (m - step)
        if stopped is None and p[i] > level:
            stopped = level
        out[i] = level if stopped is None else stopped
    return out


def outcome_words(sign: int, has_interval: bool, below: str, above: str) -> str:
    """A comparison's decision in words: ``below`` / ``above`` for sign -1 / +1, else no difference."""
    if not has_interval:
        return "no interval (fewer than 2 paired seeds)"
    return {-1: below, 1: above, 0: "no detectable difference"}[sign]


def with_holm(table: pd.DataFrame, diffs: list[np.ndarray], alpha: float = ALPHA,
              words: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """The family's table (one row per comparison, in the order of ``diffs``, each row's per-seed
    differences) with p (two-sided paired t-test), p_holm, adj_level (the adjusted interval's
    confidence level), diff_lo_adj, diff_hi_adj, holm_sign (-1 / +1: survives below / above zero, 0:
    not) and outcome_adjusted: its words, each row's (below, above) from ``words`` (default "better /
    worse than the baseline") when it survives, else "no detectable difference". Claims read
    holm_sign, never the words."""
    table = table.copy()
    p = np.array([paired_t_p(d) for d in diffs], dtype=float)
    table["p"] = p
    table["p_holm"] = holm_adjust(p)
    levels = holm_levels(p, alpha)
    table["adj_level"] = 1.0 - levels
    bounds = [mean_ci(d, a) if np.isfinite(a) else (np.nan, np.nan) for d, a in zip(diffs, levels)]
    table["diff_lo_adj"] = [b[0] for b in bounds]
    table["diff_hi_adj"] = [b[1] for b in bounds]
    words = words or [("better than the baseline", "worse than the baseline")] * len(table)
    has_interval = [bool(np.isfinite(ph) and np.isfinite(lo) and np.isfinite(hi)) for ph, lo, hi in zip(
        table["p_holm"], table["diff_lo_adj"], table["diff_hi_adj"])]
    table["holm_sign"] = [(-1 if mean < 0 else 1) if ok and ph <= alpha else 0 for ok, ph, mean in zip(
        has_interval, table["p_holm"], table["diff_mean"])]
    table["outcome_adjusted"] = [outcome_words(sign, ok, *w) for sign, ok, w in zip(
        table["holm_sign"], has_interval, words)]
    return table
