"""Collect per-cell metrics into one table and compute the paper's Table 1.

Table 1 (Section 5.3) compares each teacher with the baseline using *means over
all of the teacher's cells* (every layer, weight and seed), not its best cell:

    PPL Red. %  = 100 * (baseline_ppl - teacher_mean_ppl) / baseline_ppl
    Time Inc. % = 100 * (teacher_mean_wall_s - baseline_wall_s) / baseline_wall_s
    Score       = PPL Red. % / Time Inc. %          (Eq. 4)

pandas/numpy only, so the Snakefile's aggregation rule needs no torch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pandas as pd

from .config import BASELINE

METRIC_KEYS = (
    "cell", "teacher", "layer", "weight", "seed", "test_nelbo", "test_nelbo_se",
    "test_ppl", "test_ppl_ci95", "test_tokens", "t_draws", "train_wall_s",
    "train_tokens_per_s", "steps", "teacher_features",
)
TABLE1_COLUMNS = ["teacher", "n_cells", "ppl_mean", "ppl_reduction_pct", "time_increase_pct", "score"]
TABLE_FILES = ("runs.parquet", "runs.csv", "table1.csv", "table1.md", "table1.tex")


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

def _read_metrics(path: str | os.PathLike) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read metrics ({e})") from e
    if not isinstance(m, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(m).__name__}")
    missing = [k for k in METRIC_KEYS if k not in m]
    if missing:
        raise ValueError(f"{path}: metrics.json lacks key(s) {', '.join(missing)}")
    ci = m.pop("test_ppl_ci95")
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
        raise ValueError(f"{path}: test_ppl_ci95 must be [lo, hi], got {ci!r}")
    m["test_ppl_ci95_lo"], m["test_ppl_ci95_hi"] = (float("nan") if v is None else v for v in ci)
    return m


def collect_runs(metrics_paths: list[str]) -> pd.DataFrame:
    """One row per cell with every metrics.json key (the CI split into _lo/_hi),
    sorted baseline first, then teacher, layer, weight, seed."""
    rows = [_read_metrics(p) for p in metrics_paths]
    columns = [k for k in METRIC_KEYS if k != "test_ppl_ci95"] + ["test_ppl_ci95_lo", "test_ppl_ci95_hi"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    dup = df["cell"][df["cell"].duplicated()].tolist()
    if dup:
        raise ValueError(f"cell(s) {dup} appear in more than one metrics.json")
    extra = [c for c in df.columns if c not in columns]  # keep keys added later by evaluation
    df = df[columns + extra]
    df["layer"] = pd.array(df["layer"], dtype="Int64")  # null for the baseline
    df["weight"] = pd.to_numeric(df["weight"]).astype(float)
    df["seed"] = df["seed"].astype(int)
    df["_order"] = (df["teacher"] != BASELINE).astype(int)
    df = df.sort_values(["_order", "teacher", "layer", "weight", "seed"], na_position="first", kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


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


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1: per teacher, means over all its cells vs the baseline's mean over seeds."""
    base = runs[runs["teacher"] == BASELINE]
    if base.empty:
        raise ValueError(f"Table 1 needs a {BASELINE!r} run (no REPA) as reference; none among "
                         f"{len(runs)} runs (cells: {', '.join(map(str, runs['cell'])) or 'none'})")
    repa = runs[runs["teacher"] != BASELINE]
    means = (repa.groupby("teacher", sort=False)
             .agg(n_cells=("cell", "size"), ppl_mean=("test_ppl", "mean"), train_wall_s_mean=("train_wall_s", "mean"))
             .reset_index())
    t = table1_from_means(base["test_ppl"].mean(), base["train_wall_s"].mean(), means)
    t.attrs["baseline_n"] = len(base)
    return t


# ---------------------------------------------------------------------- rendering

_BEST = {"ppl_reduction_pct": max, "time_increase_pct": min, "score": max}
_HEADER = ["Teacher", "Cells", "Mean PPL", "PPL Red. (%)", "Time Inc. (%)", "Score"]
_DECIMALS = {"ppl_mean": 2, "ppl_reduction_pct": 1, "time_increase_pct": 1, "score": 2}


def _formatted(t: pd.DataFrame) -> tuple[list[list[str]], list[list[bool]]]:
    """Cell strings and bold flags. Best is judged on the printed values so ties
    that look equal are bolded together."""
    cells = [[str(r.teacher), str(r.n_cells)] +
             [("n/a" if pd.isna(getattr(r, c)) else f"{getattr(r, c):.{d}f}") for c, d in _DECIMALS.items()]
             for r in t.itertuples()]
    bold = [[False] * len(_HEADER) for _ in cells]
    for j, c in enumerate(_DECIMALS, start=2):
        if c not in _BEST:
            continue
        vals = [float(row[j]) for row in cells if row[j] != "n/a"]
        if vals:
            best = _BEST[c](vals)
            for i, row in enumerate(cells):
                bold[i][j] = row[j] != "n/a" and float(row[j]) == best
    return cells, bold


def _baseline_note(t: pd.DataFrame) -> str:
    a = t.attrs
    return (f"Baseline (no REPA): mean PPL {a.get('baseline_ppl', float('nan')):.2f}, "
            f"mean training time {a.get('baseline_train_wall_s', float('nan')):.0f} s "
            f"({a.get('baseline_n', '?')} seed(s)). Teacher values are means over all its layers, "
            f"weights and seeds; Score = PPL Red. / Time Inc.")


def table1_markdown(t: pd.DataFrame) -> str:
    cells, bold = _formatted(t)
    esc = lambda s: s.replace("|", r"\|")
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|"]
    for row, b in zip(cells, bold):
        lines.append("| " + " | ".join(f"**{esc(s)}**" if f else esc(s) for s, f in zip(row, b)) + " |")
    return "\n".join(lines) + "\n\n" + _baseline_note(t) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def table1_latex(t: pd.DataFrame) -> str:
    cells, bold = _formatted(t)

    def fmt(s: str, j: int, b: bool) -> str:
        s = tex_escape(s)
        if j >= 2 and s.startswith("-"):
            s = "$-$" + s[1:]  # a real minus sign, not a hyphen
        return rf"\textbf{{{s}}}" if b else s

    header = ["Teacher", "Cells", "Mean PPL", r"PPL Red.\ (\%)", r"Time Inc.\ (\%)", "Score"]
    a = t.attrs
    lines = [f"% {tex_escape(_baseline_note(t))}", r"\begin{tabular}{lrrrrr}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    if "baseline_ppl" in a:
        lines += [rf"Baseline (no REPA) & {a.get('baseline_n', '')} & {a['baseline_ppl']:.2f} & -- & -- & -- \\",
                  r"\midrule"]
    lines += [" & ".join(fmt(s, j, b) for j, (s, b) in enumerate(zip(row, bl))) + r" \\"
              for row, bl in zip(cells, bold)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(runs: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """runs.parquet/.csv (all cells) and Table 1 as .csv, .md and .tex, each written atomically."""
    out = Path(out_dir)
    t = table1(runs)
    return [
        atomic_write(out / "runs.parquet", lambda p: runs.to_parquet(p, index=False)),
        atomic_write(out / "runs.csv", lambda p: runs.to_csv(p, index=False)),
        atomic_write(out / "table1.csv", lambda p: t.to_csv(p, index=False)),
        atomic_write_text(out / "table1.md", table1_markdown(t)),
        atomic_write_text(out / "table1.tex", table1_latex(t)),
    ]
