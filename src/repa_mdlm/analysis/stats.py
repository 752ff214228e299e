"""The intervals every results file reports: Student-t means, Welch differences, Wilson proportions,
and the paired t-test's p-value.

The Student-t distribution is scipy's. ``t_quantile`` inverts scipy's CDF by bisection rather than
calling ``scipy.stats.t.ppf``: the two agree to about 1e-12, but the bisection is what wrote the pinned
Table 1 (tests/reference/table1), whose CSV keeps every digit, so the files stay bit-identical.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import stats


def t_cdf(t: float, df: float) -> float:
    """Student-t CDF."""
    return float(stats.t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile by bisection on the CDF: t_quantile(0.975, 3) = 3.182."""
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


def finite(values: Iterable[float]) -> np.ndarray:
    """The finite values (None, NaN and ±inf dropped) as a float array."""
    return np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)


def mean_ci95(values: Iterable[float]) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): the 95 % Student-t interval (``mean_ci`` at alpha 0.05); NaN bounds for n < 2."""
    v = finite(values)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    lo, hi = mean_ci(v, 0.05)
    return float(v.mean()), lo, hi, int(v.size)


def mean_ci(values: Iterable[float], alpha: float) -> tuple[float, float]:
    """The Student-t interval of the mean at level 1 - alpha (NaN bounds for n < 2); mean_ci95 is alpha = 0.05."""
    v = finite(values)
    if v.size < 2 or not 0.0 < alpha < 1.0:
        return float("nan"), float("nan")
    m = float(v.mean())
    half = t_quantile(1.0 - alpha / 2.0, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m - half, m + half


def paired_t_p(diffs: Iterable[float]) -> float:
    """Two-sided p-value of the paired t-test from the per-seed differences (scipy's ttest_1samp on
    them, which is ttest_rel on the pairs). Differences without spread: 0 if their mean is not 0, else 1;
    fewer than 2: NaN."""
    v = finite(diffs)
    if v.size < 2:
        return float("nan")
    if float(v.std(ddof=1)) == 0.0:
        return 0.0 if float(v.mean()) != 0.0 else 1.0
    return float(stats.ttest_1samp(v, 0.0).pvalue)


def diff_ci95(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, float]:
    """mean(x) - mean(y) with Welch's 95 % interval. A group of one value has no spread
    estimate and is taken as exact; two such groups give NaN bounds."""
    x, y = finite(x), finite(y)
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


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for the proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def two_proportion_diff(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid-score interval (from the two Wilson intervals; z = 1.96: 95 %)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
