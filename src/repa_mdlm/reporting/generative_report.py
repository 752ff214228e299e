"""The generative results of a sweep: one table per teacher (gen-PPL, entropy, their change against
the baseline) and two figures (gen-PPL against entropy per cell; ELBO PPL against gen-PPL).

A cell's generative.json comes from generative.py; its ELBO PPL from the runs table. Where the
judge was trained on the sweep's own train split, the table says so: it then measures fit to
that data, not general fluency.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..analysis.beyond import collect_generative
from ..analysis.format import interval, number
from ..analysis.runs import baseline_runs, is_baseline, repa_runs
from ..analysis.stats import diff_ci95, mean_ci95
from ..io import atomic_write, atomic_write_text
from ..layout import GENERATIVE_FIGURES, GENERATIVE_TABLE
from .render import markdown_table, table_page


def generative_table(gen: pd.DataFrame) -> pd.DataFrame:
    """Per teacher: mean gen-PPL and entropy with 95 % intervals over its cells, the change of gen-PPL
    against the baseline (Welch interval, %), and how many cells were flagged degenerate."""
    base = baseline_runs(gen)
    base_ppl = mean_ci95(base["gen_ppl"]) if not base.empty else None
    rows = []
    for teacher, cells in [("baseline", base), *repa_runs(gen).groupby("teacher", sort=False)]:
        ppl, ppl_lo, ppl_hi, n = mean_ci95(cells["gen_ppl"])
        ent, ent_lo, ent_hi, _ = mean_ci95(cells["entropy"])
        change = lo = hi = float("nan")
        if base_ppl is not None and teacher != "baseline":
            change, lo, hi = (100.0 * v / base_ppl[0] for v in diff_ci95(cells["gen_ppl"], base["gen_ppl"]))
        rows.append({"teacher": teacher, "n_cells": n, "gen_ppl_mean": ppl, "gen_ppl_ci95_lo": ppl_lo,
                     "gen_ppl_ci95_hi": ppl_hi, "gen_ppl_change_pct": change, "gen_ppl_change_pct_ci95_lo": lo,
                     "gen_ppl_change_pct_ci95_hi": hi, "entropy_mean": ent, "entropy_ci95_lo": ent_lo,
                     "entropy_ci95_hi": ent_hi, "flagged_cells": int((cells["flags"].fillna("") != "").sum())})
    return pd.DataFrame(rows)


_HEADER = ["Teacher", "Cells", "Gen. PPL", "95 % CI", "Change (%)", "95 % CI", "Entropy", "95 % CI", "Flagged"]


def _cells(r) -> list[str]:
    return [str(r["teacher"]), str(r["n_cells"]), number(r["gen_ppl_mean"], 2),
            interval(r["gen_ppl_ci95_lo"], r["gen_ppl_ci95_hi"], 2),
            number(r["gen_ppl_change_pct"], 1, signed=True),
            interval(r["gen_ppl_change_pct_ci95_lo"], r["gen_ppl_change_pct_ci95_hi"], 1, signed=True),
            number(r["entropy_mean"], 2), interval(r["entropy_ci95_lo"], r["entropy_ci95_hi"], 2),
            str(r["flagged_cells"])]


def _notes(gen: pd.DataFrame) -> list[str]:
    judge = gen["judge"].dropna().iloc[0] if gen["judge"].notna().any() else "n/a"
    notes = [f"Judge: {judge}. Gen. PPL: exp(judge NLL per judge token) of {int(gen['samples'].max())} samples "
             f"per cell ({int(gen['steps'].max())} denoising steps, {int(gen['seq_len'].max())} tokens), mean "
             "over the teacher's cells; lower reads as more fluent to the judge, but only beside an entropy "
             "near real text's. Entropy: unigram entropy of each sample's tokens (nats).",
             f"Real test text of the same length: gen. PPL {number(gen['data_gen_ppl'].mean(), 2)}, entropy "
             f"{number(gen['data_entropy'].mean(), 2)}. Flagged: cells whose samples repeat themselves "
             "(entropy below 80 % of real text's)."]
    if gen["judge_trained_on_train_split"].fillna(False).any():
        notes.append("This judge was trained on the sweep's own train split: its gen. PPL measures fit to "
                     "that data, not general fluency.")
    return notes


def generative_markdown(t: pd.DataFrame, gen: pd.DataFrame) -> str:
    return markdown_table(_HEADER, [_cells(r) for _, r in t.iterrows()]) + "\n\n" + "\n\n".join(_notes(gen)) + "\n"


def generative_html(t: pd.DataFrame, gen: pd.DataFrame, title: str) -> str:
    return table_page(title, _HEADER, [_cells(r) for _, r in t.iterrows()], _notes(gen))


def figure_gen_ppl_entropy(gen: pd.DataFrame):
    """Each cell's gen-PPL against its entropy (baseline marked); real text as the reference point."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.5, 2.6))
    for teacher, cells in repa_runs(gen).groupby("teacher", sort=False):
        ax.scatter(cells["entropy"], cells["gen_ppl"], s=12, label=str(teacher))
    base = gen[is_baseline(gen)]
    ax.scatter(base["entropy"], base["gen_ppl"], s=40, marker="*", color="black", label="baseline")
    ax.scatter([gen["data_entropy"].mean()], [gen["data_gen_ppl"].mean()], s=40, marker="x", color="0.4",
               label="real text")
    ax.set_xlabel("unigram entropy of samples (nats)")
    ax.set_ylabel("generative PPL (judge)")
    ax.legend(fontsize=6, frameon=False)
    return fig


def figure_elbo_vs_gen_ppl(gen: pd.DataFrame):
    """Each cell's test ELBO PPL against its gen-PPL: does fitting the test set better mean generating better?"""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.5, 2.6))
    repa = repa_runs(gen)
    ax.scatter(repa["test_ppl"], repa["gen_ppl"], s=12, color="tab:blue", label="REPA cells")
    base = gen[is_baseline(gen)]
    ax.scatter(base["test_ppl"], base["gen_ppl"], s=40, marker="*", color="black", label="baseline")
    ax.set_xlabel("test ELBO PPL")
    ax.set_ylabel("generative PPL (judge)")
    ax.legend(fontsize=6, frameon=False)
    return fig


def generative_report_main(generative: list[str], runs_path: str, tables_dir: str | os.PathLike,
                           figures_dir: str | os.PathLike) -> list[Path]:
    """What `repa-mdlm generative-report` does: the table (csv, md, html) and the two figures."""
    from .plots import save_figure

    gen = collect_generative(generative, pd.read_parquet(runs_path))
    t = generative_table(gen)
    tables, figures = Path(tables_dir), Path(figures_dir)
    stem = GENERATIVE_TABLE
    paths = [atomic_write(tables / f"{stem}.csv", lambda p: t.to_csv(p, index=False)),
             atomic_write(tables / f"{stem}_cells.csv", lambda p: gen.to_csv(p, index=False)),
             atomic_write_text(tables / f"{stem}.md", generative_markdown(t, gen)),
             atomic_write_text(tables / f"{stem}.html", generative_html(t, gen, "Generative quality: samples of each cell"))]
    for figure, draw in zip(GENERATIVE_FIGURES, (figure_gen_ppl_entropy, figure_elbo_vs_gen_ppl)):
        paths += save_figure(draw(gen), figures, figure.stem)
    return paths
