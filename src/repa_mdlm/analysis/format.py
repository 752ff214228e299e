"""How a number and an interval are written in every table and text of the results (Table 1, the verdict,
the tables beside Table 1): one home, so a missing value reads the same everywhere."""

from __future__ import annotations

import math

import pandas as pd

NA, NO_INTERVAL = "n/a", "–"


def missing(v) -> bool:
    """None, NaN, pd.NA or an infinite float: a number that cannot be printed."""
    return v is None or pd.isna(v) or (isinstance(v, float) and not math.isfinite(v))


def number(v, d: int = 1, signed: bool = False) -> str:
    """``v`` with ``d`` decimals (a sign always, if ``signed``); "n/a" if missing."""
    if missing(v):
        return NA
    return f"{v:+.{d}f}" if signed else f"{v:.{d}f}"


def interval(lo, hi, d: int = 1, signed: bool = False) -> str:
    """"[lo, hi]" with ``d`` decimals (signed: "[-1.0, +2.0]"); "–" if a bound is missing."""
    if missing(lo) or missing(hi):
        return NO_INTERVAL
    return f"[{number(lo, d, signed)}, {number(hi, d, signed)}]"
