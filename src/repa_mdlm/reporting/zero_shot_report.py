"""Zero-shot perplexity by teacher: each cell's ELBO PPL on other corpora (evaluate.extra_test_sets),
beside the baseline's, so a REPA cell that only fits the training corpus better shows.

Each runs/<cell>/zero_shot/<set>.json comes from evaluation.perplexity.zero_shot_run; this module turns them into
tables/zero_shot.{csv,md,html}: per test set and teacher, the mean PPL over the teacher's cells and
its change against the baseline (%), with 95 % intervals.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..analysis.beyond import collect_zero_shot
from ..analysis.format import interval, number
from ..analysis.runs import baseline_runs, repa_runs
from ..analysis.stats import diff_ci95, mean_ci95
from ..io import atomic_write, atomic_write_text
from ..layout import ZERO_SHOT_TABLE
from .render import markdown_table, table_page

_HEADER = ["Test set", "Teacher", "Cells", "Mean PPL", "95 % CI", "Change (%)", "95 % CI"]


def zero_shot_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per test set and teacher (the baseline first): mean PPL and its change against the baseline."""
    rows = []
    for test_set, group in cells.groupby("test_set", sort=True):
        base = baseline_runs(group)
        base_mean = mean_ci95(base["test_ppl"])[0] if not base.empty else float("nan")
        for teacher, members in [("baseline", base), *repa_runs(group).groupby("teacher", sort=False)]:
            mean, lo, hi, n = mean_ci95(members["test_ppl"])
            change = change_lo = change_hi = float("nan")
            if teacher != "baseline" and not base.empty:
                change, change_lo, change_hi = (100.0 * v / base_mean
                                                for v in diff_ci95(members["test_ppl"], base["test_ppl"]))
            rows.append({"test_set": test_set, "teacher": teacher, "n_cells": n, "ppl_mean": mean,
                         "ppl_ci95_lo": lo, "ppl_ci95_hi": hi, "ppl_change_pct": change,
                         "ppl_change_pct_ci95_lo": change_lo, "ppl_change_pct_ci95_hi": change_hi})
    return pd.DataFrame(rows)


def _cells(r) -> list[str]:
    return [str(r["test_set"]), str(r["teacher"]), str(r["n_cells"]), number(r["ppl_mean"], 2),
            interval(r["ppl_ci95_lo"], r["ppl_ci95_hi"], 2), number(r["ppl_change_pct"], 1, signed=True),
            interval(r["ppl_change_pct_ci95_lo"], r["ppl_change_pct_ci95_hi"], 1, signed=True)]


NOTE = ("Zero-shot: each cell's test ELBO perplexity on a corpus it was not trained on (same Monte Carlo "
        "settings as Table 1), mean over the teacher's cells; change against the baseline with a Welch 95 % "
        "interval. A teacher that lowers Table 1's PPL but not these fits the training corpus, not the language.")


def zero_shot_markdown(t: pd.DataFrame) -> str:
    return markdown_table(_HEADER, [_cells(r) for _, r in t.iterrows()], left_columns=2) + "\n\n" + NOTE + "\n"


def zero_shot_html(t: pd.DataFrame, title: str) -> str:
    return table_page(title, _HEADER, [_cells(r) for _, r in t.iterrows()], [NOTE], left_columns=2)


def zero_shot_report_main(results: list[str], tables_dir: str | os.PathLike) -> list[Path]:
    """What `repa-mdlm zero-shot-report` does: tables/zero_shot.{csv,md,html}."""
    cells = collect_zero_shot(results)
    t = zero_shot_table(cells)
    out = Path(tables_dir)
    return [atomic_write(out / f"{ZERO_SHOT_TABLE}.csv", lambda p: t.to_csv(p, index=False)),
            atomic_write_text(out / f"{ZERO_SHOT_TABLE}.md", zero_shot_markdown(t)),
            atomic_write_text(out / f"{ZERO_SHOT_TABLE}.html", zero_shot_html(t, "Zero-shot ELBO perplexity"))]
