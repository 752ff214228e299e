"""Table 1 arithmetic (against the paper's own numbers), table files and figures."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from repa_mdlm.aggregate import TABLE1_COLUMNS, TABLE_FILES, collect_runs, table1, table1_from_means, write_tables
from repa_mdlm.plots import make_figures

FIGS = ("fig2_training_curves", "fig3_teacher", "fig4_layer", "fig5_weight")


def metrics(teacher, seed, ppl, wall, layer=None, weight=None):
    cell = f"baseline_s{seed}" if teacher == "baseline" else f"{teacher}_L{layer}_w{weight:.2f}_s{seed}"
    nelbo = math.log(ppl)
    return {"cell": cell, "teacher": teacher, "layer": layer, "weight": weight, "seed": seed,
            "test_nelbo": nelbo, "test_nelbo_se": 0.01, "test_ppl": ppl,
            "test_ppl_ci95": [ppl * 0.98, ppl * 1.02], "test_tokens": 1000, "t_draws": 4,
            "train_wall_s": wall, "train_tokens_per_s": 1e5, "steps": 100,
            "teacher_features": None if teacher == "baseline" else "online"}


def write_metrics(tmp_path, ms):
    paths = []
    for m in ms:
        p = tmp_path / "runs" / m["cell"] / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(m))
        paths.append(str(p))
    return paths


# Baseline PPL 100 over two seeds (95, 105), 1000 s; teacher A: 80 & 90 → 85 (−15 %), 1100/1300 s → +20 %.
SYNTH = [
    metrics("tb", 0, 110.0, 1000.0, 7, 0.5),
    metrics("ta", 0, 90.0, 1300.0, 3, 1.0),
    metrics("baseline", 1, 105.0, 900.0),
    metrics("ta", 0, 80.0, 1100.0, 3, 0.25),
    metrics("baseline", 0, 95.0, 1100.0),
]


@pytest.fixture
def runs(tmp_path):
    return collect_runs(write_metrics(tmp_path, SYNTH))


# Paper Table 1: (teacher, PPL Red. %, Time Inc. %, Score).
PAPER = [("RoBERTaCrawlPT", 15.2, 7.3, 2.08), ("BERTimbau", 17.2, 15.4, 1.12), ("Qwen3-0.6B", 16.8, 83.7, 0.20),
         ("Qwen2.5-1.5B", 15.2, 82.1, 0.19), ("Qwen3-1.7B", 24.6, 109.8, 0.22), ("Qwen2.5-0.5B", -6.9, 37.4, -0.18)]


def test_paper_scores_reproduced():
    base_ppl, base_t = 86.42, 10_000.0  # the paper's baseline PPL; the time scale cancels
    rows = [{"teacher": n, "n_cells": 20, "ppl_mean": base_ppl * (1 - red / 100),
             "train_wall_s_mean": base_t * (1 + inc / 100)} for n, red, inc, _ in PAPER]
    t = table1_from_means(base_ppl, base_t, rows)
    assert list(t.columns) == TABLE1_COLUMNS
    assert t["teacher"].tolist() == [p[0] for p in PAPER]
    assert t["ppl_reduction_pct"].round(1).tolist() == [p[1] for p in PAPER]
    assert t["time_increase_pct"].round(1).tolist() == [p[2] for p in PAPER]
    assert t["score"].round(2).tolist() == [p[3] for p in PAPER]


def test_collect_runs_sorted_and_split(runs):
    assert runs["cell"].tolist() == ["baseline_s0", "baseline_s1", "ta_L3_w0.25_s0", "ta_L3_w1.00_s0",
                                     "tb_L7_w0.50_s0"]
    assert "test_ppl_ci95" not in runs and runs.loc[0, "test_ppl_ci95_lo"] == pytest.approx(95 * 0.98)
    assert pd.isna(runs.loc[0, "layer"]) and runs.loc[2, "layer"] == 3


def test_table1_synthetic_means(runs):
    t = table1(runs).set_index("teacher")
    assert t.index.tolist() == ["ta", "tb"]
    a = t.loc["ta"]
    assert a["n_cells"] == 2 and a["ppl_mean"] == pytest.approx(85.0)
    assert a["ppl_reduction_pct"] == pytest.approx(15.0)
    assert a["time_increase_pct"] == pytest.approx(20.0)
    assert a["score"] == pytest.approx(0.75)
    b = t.loc["tb"]  # worse than baseline and no slower: negative reduction, undefined score
    assert b["ppl_reduction_pct"] == pytest.approx(-10.0) and b["time_increase_pct"] == pytest.approx(0.0)
    assert math.isnan(b["score"])


def test_table1_without_baseline_errors(runs):
    with pytest.raises(ValueError, match="baseline"):
        table1(runs[runs["teacher"] != "baseline"])


def test_collect_runs_names_bad_file(tmp_path):
    m = metrics("baseline", 0, 100.0, 1.0)
    del m["train_wall_s"]
    (p,) = write_metrics(tmp_path, [m])
    with pytest.raises(ValueError, match=r"baseline_s0.*train_wall_s"):
        collect_runs([p])
    with pytest.raises(ValueError, match="nope.json"):
        collect_runs([str(tmp_path / "nope.json")])


def test_write_tables(runs, tmp_path):
    paths = write_tables(runs, tmp_path / "tables")
    assert sorted(p.name for p in paths) == sorted(TABLE_FILES)
    assert all(p.stat().st_size > 0 for p in paths)
    assert not [p for p in (tmp_path / "tables").iterdir() if p.name.startswith(".")]  # no temp files left
    assert len(pd.read_parquet(tmp_path / "tables" / "runs.parquet")) == len(SYNTH)
    md = (tmp_path / "tables" / "table1.md").read_text()
    assert "| ta | 2 | 85.00 | **15.0** | 20.0 | **0.75** |" in md
    assert "**-10.0**" not in md and "**0.0**" in md  # lowest time increase is tb's 0.0
    tex = (tmp_path / "tables" / "table1.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{0.75}" in tex and r"$-$10.0" in tex


def write_log(path, start, end, steps=(0, 250, 500, 750, 1000)):
    rows = []
    for i, s in enumerate(steps):
        rows.append({"step": s, "loss": 5.0, "nelbo": 5.0, "repa": None, "lr": 1e-4, "tokens_per_s": 1e5,
                     "elapsed_s": s / 10})
        ppl = start * (end / start) ** (i / (len(steps) - 1))
        rows.append({"step": s, "val_nelbo": math.log(ppl), "val_ppl": ppl})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def check_figures(paths, out):
    names = {p.name for p in paths}
    assert names == {f"{f}.{ext}" for f in FIGS for ext in ("png", "pdf")}
    for n in names:
        assert (out / n).stat().st_size > 1000, n


def test_make_figures(runs, tmp_path):
    logs = {c: write_log(tmp_path / "logs" / f"{c}.jsonl", 5000.0, end)
            for c, end in [("baseline_s0", 100.0), ("baseline_s1", 110.0), ("ta_L3_w0.25_s0", 80.0)]}
    out = tmp_path / "figs"
    check_figures(make_figures(runs, logs, out), out)


def test_make_figures_baseline_only(runs, tmp_path):
    base = runs[runs["teacher"] == "baseline"]
    logs = {"baseline_s0": write_log(tmp_path / "b.jsonl", 5000.0, 100.0)}
    out = tmp_path / "figs"
    check_figures(make_figures(base, logs, out), out)
    # and with no logs at all
    check_figures(make_figures(base, {}, tmp_path / "figs2"), tmp_path / "figs2")
