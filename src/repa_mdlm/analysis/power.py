"""Power of the paired comparisons: what the sweep's seeds could have detected, and how many seeds a
difference the user cares about needs.

For a two-sided paired t-test on n seeds with paired SD s at level a, the power to detect a true mean
difference d is P(|T| > t_{1-a/2, n-1}) with T noncentral t (n - 1 degrees of freedom, noncentrality
d·√n/s), from scipy.stats.nct. Two numbers per comparison, both at 80 % power:
- the smallest detectable difference with the seeds the sweep has;
- the number of seeds needed to detect the target difference (`--target-effect-pct` of the
  baseline's mean, 5 % by default).

The level is the corrected one: a / m (Bonferroni, which is Holm's first step) for a family of m
configurations. Holm tests its later steps at larger levels, so these numbers are conservative for
all but the comparison with the smallest p-value.

The SD: with fewer than POOL_BELOW_SEEDS seeds a single configuration's paired SD is a poor estimate
(2 degrees of freedom at 3 seeds), so the SD pooled over the family's configurations
(√(Σ(n_i - 1)s_i² / Σ(n_i - 1))) is used instead; `sd_source` in power.csv says which one each row used.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .correction import ALPHA
from .format import number

POWER = 0.80
POOL_BELOW_SEEDS = 5
"""Configurations with fewer paired seeds than this use the family's pooled paired SD."""
MAX_SEEDS = 100_000
TWIN_FAMILY = "test_ppl_vs_twin"
"""power.csv's metric for the family of teacher-minus-twin comparisons (controls.py); another arm's twin
family is TWIN_FAMILY:<tag>."""
ARM_FAMILY = "test_ppl_arm"
"""power.csv's metric for the family of other arms against the paper's arm and the baseline (controls.arm_family)."""


def paired_power(diff: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test at level alpha to detect a true mean difference ``diff``."""
    if n < 2 or not sd > 0:
        return float("nan")
    df, nc = n - 1, abs(diff) * math.sqrt(n) / sd
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    # the lower tail as the upper tail of -T: scipy's nct.cdf returns NaN far out in the left tail
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def detectable_difference(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true difference the paired t-test on n seeds detects with the given power."""
    if n < 2 or not np.isfinite(sd) or sd < 0:
        return float("nan")
    if sd == 0:
        return 0.0
    hi = 1.0
    while paired_power(hi * sd, sd, n, alpha) < power:
        hi *= 2.0
    return float(optimize.brentq(lambda k: paired_power(k * sd, sd, n, alpha) - power, 0.0, hi, xtol=1e-10)) * sd


def seeds_needed(diff: float, sd: float, alpha: float, power: float = POWER) -> float:
    """The fewest seeds (at least 2) with which the paired t-test detects ``diff``; NaN when it cannot
    be computed, inf beyond MAX_SEEDS."""
    if not (np.isfinite(diff) and np.isfinite(sd)) or diff == 0 or sd < 0:
        return float("nan")
    if paired_power(diff, sd, MAX_SEEDS, alpha) < power:
        return float("inf")
    if sd == 0 or paired_power(diff, sd, 2, alpha) >= power:
        return 2
    lo, hi = 2, MAX_SEEDS  # power(lo) < power <= power(hi): power grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if paired_power(diff, sd, mid, alpha) < power else (lo, mid)
    return hi


def pooled_sd(sds, ns) -> tuple[float, int]:
    """The paired SD pooled over configurations, and its degrees of freedom."""
    pairs = [(s, n - 1) for s, n in zip(sds, ns) if n > 1 and np.isfinite(s)]
    df = sum(k for _, k in pairs)
    return (math.sqrt(sum(k * s * s for s, k in pairs) / df), df) if df else (float("nan"), 0)


def power_table(families: dict[str, pd.DataFrame], target_effect_pct: float, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (metric, configuration): paired SD (own, pooled, used), the planning level alpha / m,
    the smallest detectable difference with the current seeds, and the seeds needed for the target
    (target_effect_pct % of the baseline's mean over the configuration's seeds)."""
    rows = []
    for metric, table in families.items():
        testable = table[table["n_seeds"] > 1]
        m = len(testable)
        pooled, pooled_df = pooled_sd(testable["diff_sd"], testable["n_seeds"])
        level = alpha / m if m else float("nan")
        ref_col = "reference_ppl_mean" if "reference_ppl_mean" in table else "reference_mean"
        for r in table.itertuples():
            own = r.n_seeds >= POOL_BELOW_SEEDS or m < 2 or not np.isfinite(pooled)
            sd = r.diff_sd if own else pooled
            ref = getattr(r, ref_col)
            target = abs(ref) * target_effect_pct / 100.0
            detectable = detectable_difference(sd, r.n_seeds, level) if m else float("nan")
            rows.append({"metric": metric, "teacher": r.teacher, "layer": r.layer, "weight": r.weight,
                         "n_seeds": r.n_seeds, "diff_sd": r.diff_sd, "sd_pooled": pooled, "sd_pooled_df": pooled_df,
                         "sd_used": sd, "sd_source": "own" if own else "pooled", "alpha_planning": level,
                         "power": POWER, "detectable_diff": detectable, "detectable_pct": 100.0 * detectable / abs(ref),
                         "target_effect_pct": target_effect_pct, "target_effect": target,
                         "seeds_needed": seeds_needed(target, sd, level) if m else float("nan")})
    return pd.DataFrame(rows, columns=[
        "metric", "teacher", "layer", "weight", "n_seeds", "diff_sd", "sd_pooled", "sd_pooled_df", "sd_used",
        "sd_source", "alpha_planning", "power", "detectable_diff", "detectable_pct", "target_effect_pct",
        "target_effect", "seeds_needed"])


def _seeds_text(n: float) -> str:
    if not np.isfinite(n):
        return "n/a" if np.isnan(n) else f"> {MAX_SEEDS:,}"
    return str(int(n))


def power_section(power: pd.DataFrame, metric: str = "test_ppl", heading: str = "Power: what these seeds could "
                  "detect", compared: str = "configuration minus baseline") -> list[str]:
    """The verdict's power section for one family (Table 1's test PPL against the baseline by default)."""
    table = power[power["metric"] == metric]
    lines = [f"## {heading}", "", f"Paired differences: {compared}, in test PPL.", ""]
    if table.empty or not np.isfinite(table["alpha_planning"]).any():
        return lines + ["- Fewer than 2 paired seeds: no paired SD, so no power calculation.", ""]
    first = table.iloc[0]
    m = int(round(ALPHA / first.alpha_planning))
    pooled = (table["sd_source"] == "pooled").any()
    lines += [f"- Two-sided paired t-test at {100 * POWER:g} % power, at the corrected level {ALPHA:g}/{m} = "
              f"{first.alpha_planning:.4g} (Bonferroni, Holm's first step: conservative for Holm's later steps).",
              "- Paired SD: " + (f"pooled over the {m} configurations ({number(first.sd_pooled, 3)} on "
                                 f"{int(first.sd_pooled_df)} degrees of freedom), because a configuration with fewer "
                                 f"than {POOL_BELOW_SEEDS} seeds estimates its own SD poorly; each configuration's "
                                 "own SD is in the table and in power.csv." if pooled
                                 else "each configuration's own."),
              f"- Target: a difference of {first.target_effect_pct:g} % of the reference's test PPL "
              f"({number(first.target_effect, 2)} PPL).", "",
              "| teacher | layer | λ | seeds | own paired SD | SD used | smallest detectable Δ PPL | as % | "
              "seeds needed for the target |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        lines.append(f"| {r.teacher} | {r.layer} | {r.weight:.2f} | {r.n_seeds} | {number(r.diff_sd, 2)} | "
                     f"{number(r.sd_used, 2)} ({r.sd_source}) | {number(r.detectable_diff, 2)} | "
                     f"{number(r.detectable_pct, 1)} | {_seeds_text(r.seeds_needed)} |")
    return lines + ["", "A true difference smaller than a configuration's smallest detectable Δ has less than 80 % "
                    "power (at half of it, about 25–35 %): it may well be missed, so \"no detectable difference\" "
                    "is not evidence of no effect.", ""]


def twin_power_sections(power: pd.DataFrame | None) -> list[str]:
    """One power section per twin family (one per arm: test_ppl_vs_twin, test_ppl_vs_twin:<tag>)."""
    metrics = [] if power is None else [m for m in dict.fromkeys(power["metric"])
                                        if m == TWIN_FAMILY or m.startswith(f"{TWIN_FAMILY}:")]
    return [line for m in metrics for line in power_section(
        power, m, "Power of the twin comparisons" + (f" ({m.partition(':')[2]})" if ":" in m else ""),
        "teacher minus twin")]


def arm_power_section(power: pd.DataFrame | None) -> list[str]:
    """The power of the family of other arms against the paper's arm and the baseline (ARM_FAMILY)."""
    if power is None or not (power["metric"] == ARM_FAMILY).any():
        return []
    return power_section(power, ARM_FAMILY, "Power of the other arms' comparisons",
                         "the arm's configuration minus the paper's arm or the baseline")
