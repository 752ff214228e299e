"""Table 1 arithmetic (against the paper's own numbers), its 95 % intervals, the amortised
variant, table files and every figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repa_mdlm.analysis.runs import best_repa_config, collect_runs, group_means, pareto_front
from repa_mdlm.analysis.stats import diff_ci95, mean_ci95, t_cdf, t_quantile
from repa_mdlm.layout import TABLE_FILES, figure_stems
from repa_mdlm.reporting.plots import make_figures
from repa_mdlm.reporting.table1 import (
    TABLE1_CI_COLUMNS,
    TABLE1_COLUMNS,
    amortize_cache_cost,
    read_cache_costs,
    table1,
    table1_amortized,
    table1_from_means,
    write_tables,
)


def metrics(teacher, seed, ppl, wall, layer=None, weight=None, features="cached", step=None):
    """One metrics.json; ``step``: its step_seconds (None: a cell trained before they were recorded)."""
    cell = f"baseline_s{seed}" if teacher == "baseline" else f"{teacher}_L{layer}_w{weight:.2f}_s{seed}"
    nelbo = math.log(ppl)
    return {"cell": cell, "teacher": teacher, "layer": layer, "weight": weight, "seed": seed,
            "test_nelbo": nelbo, "test_nelbo_se": 0.01, "test_nelbo_mc_se": 0.005, "test_ppl": ppl,
            "test_ppl_ci95": [ppl * 0.98, ppl * 1.02], "test_tokens": 1000, "t_draws": 4,
            "train_wall_s": wall, "train_tokens_per_s": 1e5, "steps": 100,
            **({} if step is None else {"step_seconds": step, "validation_seconds": 30.0}),
            "teacher_features": None if teacher == "baseline" else features, "device": "cpu"}


def write_metrics(tmp_path, ms, world_sizes=None):
    paths = []
    for m in ms:
        p = tmp_path / "runs" / m["cell"] / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(m))
        if world_sizes and m["cell"] in world_sizes:
            (p.parent / "train_summary.json").write_text(json.dumps({"world_size": world_sizes[m["cell"]]}))
        paths.append(str(p))
    return paths


# Baseline PPL 100 over two seeds (95, 105), 1000 s of steps each; teacher A (cached features): 80 & 90
# → 85 (−15 %), seed 0's steps 1100/1300 s against seed 0's baseline → +20 %; teacher B (online): one
# cell. The wall times (train_wall_s) differ from the step times on purpose: Table 1 times the steps.
SYNTH = [
    metrics("tb", 0, 110.0, 1000.0, 7, 0.5, features="online", step=1000.0),
    metrics("ta", 0, 90.0, 1300.0, 3, 1.0, step=1300.0),
    metrics("baseline", 1, 105.0, 900.0, step=1000.0),
    metrics("ta", 0, 80.0, 1100.0, 3, 0.25, step=1100.0),
    metrics("baseline", 0, 95.0, 1100.0, step=1000.0),
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
    # each cell's standard error of the PPL: ppl * nelbo_se (delta method), and its Monte Carlo part
    assert runs["test_ppl_se"].tolist() == pytest.approx([0.95, 1.05, 0.80, 0.90, 1.10])
    assert runs["test_ppl_mc_se"].tolist() == pytest.approx([0.475, 0.525, 0.40, 0.45, 0.55])
    assert runs["step_seconds"].tolist() == [1000.0, 1000.0, 1100.0, 1300.0, 1000.0]
    assert runs["validation_seconds"].tolist() == [30.0] * 5 and runs["startup_seconds"].isna().all()


def test_old_metrics_without_step_times_use_train_wall_s(tmp_path):
    """train_wall_s has always summed the optimisation steps alone: a sweep trained before step_seconds
    was recorded re-aggregates to the same step times; the overheads are unknown (NaN)."""
    runs = collect_runs(write_metrics(tmp_path, [metrics("baseline", 0, 100.0, 900.0),
                                                 metrics("ta", 0, 90.0, 990.0, 3, 1.0)]))
    assert runs["step_seconds"].tolist() == [900.0, 990.0]
    assert runs[["step_seconds_median", "startup_seconds", "checkpoint_seconds"]].isna().all().all()
    assert table1(runs).loc[0, "time_increase_pct"] == pytest.approx(10.0)


def test_impossible_step_times_name_the_training_job(tmp_path):
    (p,) = write_metrics(tmp_path, [{**metrics("baseline", 0, 100.0, 900.0, step=900.0), "step_seconds": -1.0}])
    with pytest.raises(ValueError, match=r"step_seconds = -1\.0.*--forcerun train"):
        collect_runs([p])


def test_gpu_hours_use_world_size_from_train_summary(tmp_path):
    paths = write_metrics(tmp_path, SYNTH, world_sizes={"ta_L3_w1.00_s0": 4})
    r = collect_runs(paths).set_index("cell")
    assert r.loc["ta_L3_w1.00_s0", "world_size"] == 4 and r.loc["ta_L3_w0.25_s0", "world_size"] == 1
    assert r.loc["ta_L3_w1.00_s0", "gpu_hours"] == pytest.approx(1300 / 3600 * 4)
    assert r.loc["baseline_s0", "gpu_hours"] == pytest.approx(1100 / 3600)


# Two-sided 95 % Student-t quantiles t_{0.975, df} from standard tables.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_scipy_t_distribution_matches_known_values():
    """scipy's Student-t against closed forms: Cauchy (df 1), df 2, and the normal limit."""
    assert t_cdf(0.0, 7) == 0.5
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)  # 1/2 + atan(1)/pi
    for t in (-3.0, 0.5, 2.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_cdf(1.959963984540054, 1e9) == pytest.approx(0.975, abs=1e-9)
    # the bisection inverts the CDF to scipy's own quantile
    for df in (1, 2.5, 7, 40):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)


def test_mean_ci95_is_a_t_interval():
    m, lo, hi, n = mean_ci95([70.0, 72.0, 74.0, 76.0])  # sd = 2.582, se = 1.291, df = 3
    half = 3.182 * math.sqrt(20 / 3) / 2
    assert (m, n) == (73.0, 4) and lo == pytest.approx(73 - half, rel=2e-4) and hi == pytest.approx(73 + half, rel=2e-4)
    m, lo, hi, n = mean_ci95([5.0])
    assert m == 5.0 and n == 1 and math.isnan(lo) and math.isnan(hi)


def test_diff_ci95_welch():
    # equal variances 50 and n = 2 each: se^2 = 25 + 25, Welch df = 2, t = 4.303
    d, lo, hi = diff_ci95([95.0, 105.0], [80.0, 90.0])
    assert d == 15.0 and hi - d == pytest.approx(4.303 * math.sqrt(50), rel=2e-4) and d - lo == pytest.approx(hi - d)
    # a single reference value is taken as exact: the interval is the other group's t-interval
    d, lo, hi = diff_ci95([100.0], [70.0, 72.0, 74.0, 76.0])
    assert d == 27.0 and hi - d == pytest.approx(3.182 * math.sqrt(20 / 3) / 2, rel=2e-4)


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


def test_table1_confidence_intervals(runs):
    t = table1(runs)
    assert list(t.columns) == TABLE1_COLUMNS + TABLE1_CI_COLUMNS  # the paper's columns untouched, first
    a = t.set_index("teacher").loc["ta"]
    half = 12.706 * 5.0  # two cells 80, 90: sd 7.07, se 5, df 1
    assert a["ppl_mean_ci95_lo"] == pytest.approx(85 - half, abs=1e-2)
    assert a["ppl_mean_ci95_hi"] == pytest.approx(85 + half, abs=1e-2)
    # reduction, paired by seed like the time: ta's cells are all seed 0, so one seed, no interval
    assert math.isnan(a["ppl_reduction_pct_ci95_lo"]) and math.isnan(a["ppl_reduction_pct_ci95_hi"])
    # time: both of ta's cells are seed 0, paired with seed 0's baseline: one seed, no interval
    assert a["time_n_seeds"] == 1 and math.isnan(a["time_increase_pct_ci95_lo"])
    assert a["step_seconds_mean"] == 1200.0
    # the Monte Carlo part alone (ppl * nelbo_mc_se = 0.40, 0.45), not the data-plus-MC se (0.80, 0.90)
    assert a["ppl_mc_se"] == pytest.approx(math.sqrt(0.40 ** 2 + 0.45 ** 2) / 2)
    b = t.set_index("teacher").loc["tb"]  # a single cell: no interval of its own
    assert math.isnan(b["ppl_mean_ci95_lo"])
    assert t.attrs["baseline_ppl_ci95_lo"] == pytest.approx(100 - half, abs=1e-2)


def test_ppl_reduction_interval_is_paired_by_seed(tmp_path):
    """Seeds differ by ±10 PPL, the teacher beats each seed's baseline by 4-6: paired, the reduction's
    interval lies above zero; Welch's unpaired interval on the same numbers would straddle it."""
    ms = [metrics("baseline", s, p, 1000.0, step=1000.0) for s, p in enumerate((90.0, 100.0, 110.0))]
    ms += [metrics("ta", s, p, 1000.0, 3, 0.5, step=1000.0) for s, p in enumerate((85.0, 96.0, 104.0))]
    runs = collect_runs(write_metrics(tmp_path, ms))
    a = table1(runs).set_index("teacher").loc["ta"]
    assert a["ppl_reduction_pct"] == pytest.approx(5.0)
    half = 4.303 * np.std([-5.0, -4.0, -6.0], ddof=1) / math.sqrt(3)  # in PPL, of a baseline mean 100
    assert a["ppl_reduction_pct_ci95_lo"] == pytest.approx(5.0 - half, rel=2e-4)
    assert a["ppl_reduction_pct_ci95_hi"] == pytest.approx(5.0 + half, rel=2e-4)
    assert a["ppl_reduction_pct_ci95_lo"] > 0
    _, lo, _ = diff_ci95([90.0, 100.0, 110.0], [85.0, 96.0, 104.0])
    assert lo < 0


def test_table1_amortized_adds_cache_share_to_cached_cells_only(runs):
    r = amortize_cache_cost(runs, {"ta": 200.0, "tb": 50.0}).set_index("cell")
    assert r.loc["ta_L3_w0.25_s0", "step_seconds_amortized"] == pytest.approx(1100 + 100)
    assert r.loc["tb_L7_w0.50_s0", "step_seconds_amortized"] == pytest.approx(1000)  # online: no cache
    assert r.loc["baseline_s0", "step_seconds_amortized"] == pytest.approx(1000)
    t = table1_amortized(runs, {"ta": 200.0, "tb": 50.0}).set_index("teacher")
    a = t.loc["ta"]
    assert a["time_increase_pct"] == pytest.approx(30.0) and a["score"] == pytest.approx(0.5)
    assert a["cache_wall_s"] == 200.0 and a["cache_cells"] == 2 and a["cache_wall_s_per_cell"] == 100.0
    assert a["ppl_reduction_pct"] == pytest.approx(15.0)  # quality is untouched
    assert t.loc["tb", "time_increase_pct"] == pytest.approx(0.0)
    plain = table1(runs).set_index("teacher")
    assert plain.loc["ta", "time_increase_pct"] == pytest.approx(20.0)


def noisy_neighbour_runs(tmp_path):
    """Seed 2's jobs shared the machine with a burst: its baseline and its REPA cells all ran 1.6 x slower.
    ta costs +5 % per step but only seeds 1 and 2 are done; tb costs +10 % (± 1 s) on all three seeds.
    Wall time = step time + 100 s."""
    slow = {0: 1.0, 1: 1.0, 2: 1.6}
    ms = [metrics("baseline", s, 100.0, 1000.0 * f + 100, step=1000.0 * f) for s, f in slow.items()]
    for s in (1, 2):
        ms += [metrics("ta", s, 95.0, 1050.0 * slow[s] + 100, 3, w, step=1050.0 * slow[s]) for w in (0.5, 1.0)]
    for s in (0, 1, 2):
        ms += [metrics("tb", s, 97.0, 1100.0 * slow[s] + j + 100, 3, w, step=1100.0 * slow[s] + j)
               for w, j in ((0.5, s % 2), (1.0, 2 - s % 2))]
    return collect_runs(write_metrics(tmp_path, ms))


def test_time_increase_is_paired_by_seed_so_a_noisy_neighbour_cancels(tmp_path):
    runs = noisy_neighbour_runs(tmp_path)
    t = table1(runs).set_index("teacher")
    base, repa = runs[runs["teacher"] == "baseline"], runs[runs["teacher"] == "ta"]
    # each cell against its own seed's baseline: the burst slows both sides of seed 2's pairs
    assert t.loc["ta", "time_increase_pct"] == pytest.approx(5.0, abs=1e-9) and t.loc["ta", "time_n_seeds"] == 2
    # the unpaired wall-time means of before count the burst (ta misses the fast seed 0) as REPA's cost
    unpaired = 100 * (repa["train_wall_s"].mean() - base["train_wall_s"].mean()) / base["train_wall_s"].mean()
    assert unpaired == pytest.approx(12.69, abs=0.01)
    b = t.loc["tb"]  # seeds' mean differences 101, 101, 161 s over the baseline's mean 1200 s
    assert b["time_increase_pct"] == pytest.approx(100 * 121 / 1200)
    half = 4.303 * np.std([101, 101, 161], ddof=1) / math.sqrt(3) / 12
    assert b["time_increase_pct_ci95_lo"] == pytest.approx(b["time_increase_pct"] - half, rel=2e-4)
    assert b["time_increase_pct_ci95_lo"] > 0 and b["time_n_seeds"] == 3
    # unpaired (Welch) the same step times cannot tell +10 % from nothing
    _, lo, _ = diff_ci95(runs.loc[runs["teacher"] == "tb", "step_seconds"], base["step_seconds"])
    assert lo < 0
    assert b["score"] == pytest.approx(3.0 / b["time_increase_pct"])  # Eq. 4 on the point estimates


def test_a_difference_is_bold_only_where_its_interval_excludes_zero(tmp_path):
    from repa_mdlm.reporting.render import table1_html, table1_latex, table1_markdown

    runs = noisy_neighbour_runs(tmp_path)
    both = table1_markdown(table1(runs))  # ta's +5.0 % is the lowest, but [-9.7, 19.7] includes 0
    # (its PPL reduction, 5 PPL on each of its seeds, is paired too: an interval without spread, above zero)
    assert "| ta | 4 | 95.00 | [95.00, 95.00] | **5.0** | [5.0, 5.0] | 5.0 | [-9.7, 19.7] |" in both
    assert "**10.1**" not in both  # tb's interval excludes 0, but it is not the lowest
    alone = table1(runs[runs["teacher"] != "ta"])
    assert "| **10.1** | [2.9, 17.3] |" in table1_markdown(alone)
    assert r"\textbf{10.1}" in table1_latex(alone) and "<b>10.1</b>" in table1_html(alone, "T")
    # the PPL reduction follows the same rule, judged on the interval as printed
    t = table1(runs)
    t["ppl_reduction_pct_ci95_lo"], t["ppl_reduction_pct_ci95_hi"] = 0.04, 9.0  # prints [0.0, 9.0]
    assert "**5.0**" not in table1_markdown(t)
    t["ppl_reduction_pct_ci95_lo"] = 0.06  # prints [0.1, 9.0]
    assert "| ta | 4 | 95.00 | [95.00, 95.00] | **5.0** | [0.1, 9.0] |" in table1_markdown(t)
    assert "a PPL Red. only where its 95 % CI lies above zero" in table1_markdown(t)
    t["ppl_reduction_pct_ci95_lo"], t["ppl_reduction_pct_ci95_hi"] = -9.0, -0.5  # every teacher raised the PPL
    t["ppl_reduction_pct"] = -5.0
    assert "**-5.0**" not in table1_markdown(t)  # the least harmful is not "best"


def test_cache_costs_from_manifests(tmp_path):
    paths = []
    for teacher, split, wall in (("ta", "train", 150.0), ("ta", "val", 50.0), ("tb", "train", None)):
        p = tmp_path / teacher / "features" / f"{split}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"teacher": teacher, **({"wall_s": wall} if wall is not None else {})}))
        paths.append(p)
    costs, problems = read_cache_costs(paths)
    assert costs == {"ta": 200.0, "tb": 0.0}
    assert len(problems) == 1 and "tb" in problems[0] and "wall_s" in problems[0]


def test_best_repa_config_averages_seeds(tmp_path):
    ms = [metrics("baseline", 0, 100.0, 1.0),
          metrics("ta", 0, 70.0, 1.0, 3, 1.0), metrics("ta", 1, 95.0, 1.0, 3, 1.0),  # best single cell, mean 82.5
          metrics("ta", 0, 80.0, 1.0, 5, 1.0), metrics("ta", 1, 81.0, 1.0, 5, 1.0)]  # mean 80.5: best config
    best = best_repa_config(collect_runs(write_metrics(tmp_path, ms)))
    assert (best["layer"], best["cell"]) == (5, "ta_L5_w1.00_s0") and best["ppl_mean"] == pytest.approx(80.5)


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
    manifest = tmp_path / "feat" / "ta" / "features" / "train.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"teacher": "ta"}))  # no wall_s yet: counted as 0, with a warning
    with pytest.warns(UserWarning, match="wall_s"):
        paths = write_tables(runs, tmp_path / "tables", [manifest])
    assert sorted(p.name for p in paths) == sorted(TABLE_FILES)
    assert all(p.stat().st_size > 0 for p in paths)
    assert not [p for p in (tmp_path / "tables").iterdir() if p.name.startswith(".")]  # no temp files left
    assert len(pd.read_parquet(tmp_path / "tables" / "runs.parquet")) == len(SYNTH)
    md = (tmp_path / "tables" / "table1.md").read_text()
    # ta's reduction is the best, but all its cells are seed 0: one seed, no interval for either part
    assert "| ta | 2 | 85.00 | [21.47, 148.53] | 15.0 | – | 20.0 | – | 0.75 |" in md  # parts unsupported
    assert "**-10.0**" not in md and "**0.0**" not in md  # tb's 0.0 is the lowest, but one seed: no interval
    assert "(95 % CI [36.47, 163.53])" in md  # the baseline's own interval: it has two seeds
    assert "WARNING" not in md
    tex = (tmp_path / "tables" / "table1.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{0.75}" not in tex and r"$-$10.0" in tex
    assert r"\textbf{15.0}" not in tex and r"\begin{tabular}{lrrrrrrrr}" in tex
    amd = (tmp_path / "tables" / "table1_amortized.md").read_text()
    assert "WARNING: ta:" in amd and "online" in amd
    html = (tmp_path / "tables" / "table1.html").read_text()
    assert "<b>0.75</b>" not in html and "Baseline (no REPA)" in html


def write_log(path, start, end, steps=(0, 250, 500, 750, 1000), repa=None):
    """A train_log.jsonl as the trainer writes it: one row per logged step, validation in the same row."""
    rows = []
    for i, s in enumerate(steps):
        ppl = start * (end / start) ** (i / (len(steps) - 1))
        rows.append({"step": s, "loss": 5.0, "nelbo": 5.0, "repa": None if repa is None else repa * 0.9 ** i,
                     "lr": 1e-4, "tokens_per_s": 1e5, "elapsed_s": s / 10, "val_nelbo": math.log(ppl), "val_ppl": ppl})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def check_figures(paths, out, teachers):
    names = {p.name for p in paths}
    assert names == {f"{f}.{ext}" for f in figure_stems(teachers) for ext in ("png", "pdf")}
    for n in names:
        assert (out / n).stat().st_size > 1000, n


def synthetic_logs(tmp_path, cells):
    return {c: write_log(tmp_path / "logs" / c / "train_log.jsonl", 5000.0, 80.0 + 3 * i, repa=0.5 / (i + 1))
            for i, c in enumerate(cells)}


def test_make_figures(runs, tmp_path):
    logs = synthetic_logs(tmp_path, ["baseline_s0", "baseline_s1", "ta_L3_w0.25_s0", "tb_L7_w0.50_s0"])
    out = tmp_path / "figs"
    check_figures(make_figures(runs, logs, out), out, ["ta", "tb"])


def test_make_figures_grid_with_seeds(tmp_path):
    """A full grid with two seeds: CIs everywhere, a baseline band, seed-averaged curves."""
    ms = [metrics("baseline", s, 100.0 + 4 * s, 1000.0 + 10 * s) for s in (0, 1)]
    for t, shift in (("ta", -10.0), ("tb", 3.0)):
        for layer in (3, 7):
            for w in (0.5, 1.0):
                for s in (0, 1):
                    ms.append(metrics(t, s, 100.0 + shift + layer * w + s, 1100.0 + 50 * w + 5 * s, layer, w))
    runs = collect_runs(write_metrics(tmp_path, ms))
    logs = synthetic_logs(tmp_path, runs["cell"].tolist())
    out = tmp_path / "figs"
    check_figures(make_figures(runs, logs, out), out, ["ta", "tb"])
    g = group_means(runs, "layer")
    assert g.loc[3, "n"] == 8 and g.loc[3, "hi"] > g.loc[3, "mean"] > g.loc[3, "lo"]


def test_make_figures_baseline_only(runs, tmp_path):
    base = runs[runs["teacher"] == "baseline"]
    logs = {"baseline_s0": write_log(tmp_path / "b.jsonl", 5000.0, 100.0)}
    out = tmp_path / "figs"
    check_figures(make_figures(base, logs, out), out, [])
    # and with no logs at all, and a heatmap asked for a teacher without cells
    check_figures(make_figures(base, {}, tmp_path / "figs2", ["ta"]), tmp_path / "figs2", ["ta"])


def test_pareto_front():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    ppl = [90.0, 80.0, 85.0, 85.0, 70.0, 100.0]
    # (0.5, 100) cheapest; (1, 90), (2, 80), (4, 70) each improve; (2, 85) and (3, 85) are dominated
    assert pareto_front(np.array(cost), np.array(ppl)).tolist() == [5, 0, 1, 4]
