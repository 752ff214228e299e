"""The study's comparison: paired by seed against the baseline, time to the baseline's quality,
the teacher-feature probe, the Monte Carlo error of evaluation and the verdict built from them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from repa_mdlm.analysis.controls import control_differences
from repa_mdlm.analysis.feature_probe import feature_structure
from repa_mdlm.analysis.paired import paired_differences
from repa_mdlm.analysis.stats import two_proportion_diff, wilson_interval
from repa_mdlm.analysis.verdict import VerdictInputs, curve_trend, noise_summary, steps_to_baseline, verdict_markdown
from repa_mdlm.evaluation.perplexity import monte_carlo_se, summarize

BASE = [100.0, 104.0, 97.0]


def runs_table(cells: dict[tuple, list[float]], baseline=BASE) -> pd.DataFrame:
    """A runs table: {(teacher, layer, weight): [ppl per seed]} plus the baseline."""
    rows = [{"cell": f"baseline_s{s}", "teacher": "baseline", "layer": pd.NA, "weight": np.nan, "seed": s,
             "test_ppl": p, "test_ppl_mc_se": 0.05} for s, p in enumerate(baseline)]
    for (teacher, layer, weight), ppls in cells.items():
        rows += [{"cell": f"{teacher}_L{layer}_w{weight:.2f}_s{s}", "teacher": teacher, "layer": layer,
                  "weight": weight, "seed": s, "test_ppl": p, "test_ppl_mc_se": 0.05} for s, p in enumerate(ppls)]
    df = pd.DataFrame(rows)
    df["layer"] = pd.array(df["layer"], dtype="Int64")
    return df


def test_paired_by_seed_not_pooled():
    # every seed 2 PPL better: the seeds' spread (97..104) cancels in the pairs, so the interval is tight
    runs = runs_table({("t", 2, 0.5): [b - 2 for b in BASE], ("t", 3, 0.5): [b + 3 for b in BASE],
                       ("t", 2, 1.0): [BASE[0] - 3, BASE[1] + 3, BASE[2]]})
    p = paired_differences(runs).set_index(["layer", "weight"])
    assert p.loc[(2, 0.5), "diff_mean"] == pytest.approx(-2.0)
    assert p.loc[(2, 0.5), "outcome"] == "better than the baseline"
    assert p.loc[(3, 0.5), "outcome"] == "worse than the baseline"
    assert p.loc[(2, 1.0), "outcome"] == "no detectable difference"
    # t-interval over the seeds' differences: d = [-3, 3, 0], sd 3, t(0.975, 2) = 4.303
    assert p.loc[(2, 1.0), "diff_hi"] == pytest.approx(4.303 * 3 / math.sqrt(3), rel=1e-3)
    assert p.loc[(2, 0.5), "diff_pct"] == pytest.approx(-200 / np.mean(BASE))


def test_one_seed_gives_no_interval():
    runs = runs_table({("t", 2, 0.5): [90.0]}, baseline=[100.0])
    assert paired_differences(runs)["outcome"].iloc[0].startswith("no interval")


def test_control_differences_pair_layer_weight_and_seed():
    runs = runs_table({("teacher", 2, 0.5): [90.0, 91.0, 92.0], ("random", 2, 0.5): [95.0, 96.0, 97.5]})
    c = control_differences(runs, "teacher", "random")
    assert c["diff_mean"].iloc[0] == pytest.approx(-5.1666, rel=1e-3)
    assert c["outcome"].iloc[0] == "better than random"
    assert c["outcome_adjusted"].iloc[0] == "better than random" and c["p_holm"].iloc[0] == c["p"].iloc[0]


def write_log(path, curve):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": s, "val_ppl": v}) + "\n" for s, v in curve))


def test_steps_to_baseline_per_seed(tmp_path):
    runs = runs_table({("t", 2, 0.5): [95.0, 99.0, 93.0]}, baseline=[100.0, 104.0, 97.0])
    logs = {}
    for seed, final in enumerate([200, 210, 190]):
        logs[f"baseline_s{seed}"] = tmp_path / f"baseline_s{seed}.jsonl"
        write_log(logs[f"baseline_s{seed}"], [(0, 500), (50, 300), (100, final)])
    write_log(tmp_path / "a.jsonl", [(0, 500), (50, 199), (100, 150)])   # reaches seed 0's 200 at step 50
    write_log(tmp_path / "b.jsonl", [(0, 500), (50, 260), (100, 209)])   # seed 1's 210 at step 100
    write_log(tmp_path / "c.jsonl", [(0, 500), (50, 300), (100, 191)])   # never reaches seed 2's 190
    for seed, name in enumerate("abc"):
        logs[f"t_L2_w0.50_s{seed}"] = tmp_path / f"{name}.jsonl"
    steps = steps_to_baseline(runs, {k: str(v) for k, v in logs.items()}).set_index("seed")
    assert steps.loc[0, "step"] == 50 and steps.loc[1, "step"] == 100 and pd.isna(steps.loc[2, "step"])
    assert steps.loc[1, "baseline_final_val_ppl"] == 210


def test_curve_trend(tmp_path):
    falling, flat = tmp_path / "f.jsonl", tmp_path / "g.jsonl"
    write_log(falling, [(0, 500), (100, 300), (200, 250), (300, 220), (400, 200)])
    write_log(flat, [(0, 500), (100, 300), (200, 201), (300, 200.5), (400, 200)])
    trend = curve_trend([str(falling)])
    assert trend["trend"] == "still falling" and trend["from_step"] == 300
    assert trend["drop_pct"] == pytest.approx(100 * 20 / 220)
    assert curve_trend([str(flat)])["trend"] == "flattened"


def test_feature_structure_tells_structure_from_noise():
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(600, 16)), axis=0)  # neighbours in the stream are alike
    noise = rng.normal(size=(600, 16)) + 20.0             # no order, and all pointing one way
    s_walk, s_noise = feature_structure(walk), feature_structure(noise)
    assert s_walk["neighbour_top1"] > 0.9
    assert s_noise["neighbour_top1"] < 0.05 and s_noise["neighbour_top1_lo"] < s_noise["chance"] * 5
    assert s_noise["anisotropy"] > 0.99 and s_noise["anisotropy_lo"] <= s_noise["anisotropy"] <= s_noise["anisotropy_hi"]
    assert s_walk["adjacent_minus_random_cos"] > 0.5 > abs(s_noise["adjacent_minus_random_cos"])
    assert 10 < s_noise["effective_rank"] <= 16          # isotropic noise spreads over all 16 directions
    assert s_walk["effective_rank"] < s_noise["effective_rank"]


def test_intervals_for_proportions():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    d, lo, hi = two_proportion_diff(60, 100, 40, 100)
    assert d == pytest.approx(0.2) and 0 < lo < 0.2 < hi


def test_monte_carlo_se_matches_repeated_evaluation():
    """The collapsed-strata estimate against the real spread of re-drawn evaluations, on a
    N-ELBO with a strong trend in t (which an i.i.d. estimate would count as noise)."""
    rng = np.random.default_rng(1)
    n, k = 300, 8
    sequence_effect = rng.normal(0, 1, n)

    def draw():
        t = (np.arange(k) + rng.random((n, k))) / k
        return sequence_effect[:, None] + 6 * t + rng.normal(0, 1, (n, k)) * (0.3 + 1 / (1 + 20 * t))

    true_se = np.std([draw().mean() for _ in range(1000)])
    estimates = [monte_carlo_se(draw()) for _ in range(20)]
    assert np.mean(estimates) == pytest.approx(true_se, rel=0.15)
    iid = math.sqrt(draw().var(axis=1, ddof=1).sum() / k) / n
    assert iid > 3 * true_se  # why the strata must be collapsed, not ignored
    summary = summarize(draw(), seq_len=128)
    assert summary["test_nelbo_mc_se"] < summary["test_nelbo_se"]
    assert summary["test_tokens"] == n * 128


def verdict_for(runs: pd.DataFrame, unigram_ppl=400.0) -> str:
    paired = paired_differences(runs)
    steps = pd.DataFrame(columns=["teacher", "layer", "weight", "seed", "step", "final_step"])
    return verdict_markdown(VerdictInputs(runs, paired, steps, {"trend": "unknown"}, {"unigram_ppl": unigram_ppl,
                            "train_tokens": 1000}, noise_summary(runs, paired), pd.DataFrame(), []))


def test_verdict_follows_the_numbers():
    cells = {("minilm", 2, 0.5): [b - 0.5 for b in BASE], ("minilm", 3, 0.5): [b + 0.2 for b in BASE]}
    text = verdict_for(runs_table(cells))
    assert "**1 of 2 REPA configurations beat the baseline**" in text and "minilm L2 λ0.50 (-0.50 PPL)" in text
    assert "Ratio 0.251: the baseline **is at most half**" in text
    # one cell of one seed changes: that configuration no longer beats the baseline
    cells[("minilm", 2, 0.5)][1] = BASE[1] + 4.0
    changed = verdict_for(runs_table(cells))
    assert "**0 of 2 REPA configurations beat the baseline**" in changed
    assert "REPA does not measurably lower the test perplexity" in changed
    assert "is **not** below half" in verdict_for(runs_table(cells), unigram_ppl=150.0)


def test_the_verdict_pairs_generation_and_zero_shot_metrics_by_seed_too(tmp_path):
    import math

    from repa_mdlm.analysis.paired import beyond_test_ppl, paired_metric
    from repa_mdlm.analysis.verdict import beyond_metrics
    from repa_mdlm.io import atomic_write_checked_json

    runs = runs_table({("ta", 2, 0.5): [90.0, 95.0, 92.0]})
    gen, zs = [], []
    for i, r in enumerate(runs.itertuples()):
        lower = r.teacher == "ta"
        ids = {"cell": r.cell, "teacher": r.teacher, "seed": int(r.seed),
               "layer": None if pd.isna(r.layer) else int(r.layer), "weight": None if pd.isna(r.weight) else r.weight}
        g = {**ids, "gen_ppl": 50.0 - 10 * lower + i % 3, "entropy": 4.0, "flags": []}
        atomic_write_checked_json(tmp_path / f"g{i}.json", g)
        z = {**ids, "test_set": "other", "test_ppl": 300.0 + 5 * lower + i % 2, "test_nelbo": math.log(300.0)}
        atomic_write_checked_json(tmp_path / f"z{i}.json", z)
        gen.append(str(tmp_path / f"g{i}.json"))
        zs.append(str(tmp_path / f"z{i}.json"))
    cells = beyond_metrics(runs, gen, zs)
    assert {"gen_ppl", "entropy", "zero_shot:other"} <= set(cells.columns)
    gen_diff = paired_metric(cells, "gen_ppl").iloc[0]
    assert gen_diff["n_seeds"] == 3 and gen_diff["diff_hi"] < 0 and gen_diff["outcome"] == "below the baseline"
    text = "\n".join(beyond_test_ppl(cells))
    assert "Δ gen. PPL (judge)" in text and "Δ PPL on other" in text and "| ta | 2 | 0.50 |" in text
    assert beyond_metrics(runs, [], []) is None
