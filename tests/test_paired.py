"""The comparison's statistics: paired t-test p-values, Holm's correction over a family of REPA
configurations, the adjusted intervals, the power calculation, and the verdict's rules in both
directions (survives correction / not; an effect / none) on synthetic runs with a known effect."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repa_mdlm.analysis.correction import holm_adjust, holm_levels
from repa_mdlm.analysis.paired import paired_differences, paired_metric
from repa_mdlm.analysis.power import detectable_difference, paired_power, pooled_sd, power_table, seeds_needed
from repa_mdlm.analysis.verdict import VerdictInputs, compare_main, noise_summary, verdict_markdown

from .test_compare import runs_table

BASE5 = [100.0, 104.0, 97.0, 102.0, 99.0]
LARGE = [-10.0, -11.0, -9.0, -10.5, -9.5]        # p ~ 1e-6: survives any correction of three
BORDERLINE = [-1.0, -2.0, -3.0, -0.5, -0.8]      # p = 0.034: below 0.05 raw, not at Holm's 0.05/2
NULL_A = [1.0, -1.0, 2.0, -2.0, 0.5]             # p = 0.90
NULL_B = [-0.5, 1.0, -1.5, 0.8, 0.2]             # p = 1.00


def family(diffs: dict[str, list[float]]) -> pd.DataFrame:
    return runs_table({(t, 3, 0.5): [b + d for b, d in zip(BASE5, ds)] for t, ds in diffs.items()}, baseline=BASE5)


def verdict(runs: pd.DataFrame) -> str:
    paired = paired_differences(runs)
    steps = pd.DataFrame(columns=["teacher", "layer", "weight", "seed", "step", "final_step"])
    return verdict_markdown(VerdictInputs(runs, paired, steps, {"trend": "unknown"}, None, noise_summary(runs, paired),
                                          pd.DataFrame(), [], power=power_table({"test_ppl": paired}, 5.0)))


def test_p_values_are_scipys_paired_t_test():
    rng = np.random.default_rng(3)
    base = list(100 + rng.normal(0, 5, 4))
    cells = {(f"t{i}", 2, 0.5): list(np.array(base) + rng.normal(i - 1, 2, 4)) for i in range(3)}
    runs = runs_table(cells, baseline=base)
    paired = paired_differences(runs).set_index("teacher")
    for (teacher, _, _), ppl in cells.items():
        assert paired.loc[teacher, "p"] == pytest.approx(stats.ttest_rel(ppl, base).pvalue, rel=1e-12)
    other = paired_metric(runs, "test_ppl").set_index("teacher")   # any metric goes through the same test
    assert np.allclose(other.loc[paired.index, "p"], paired["p"], rtol=1e-12)
    assert np.allclose(other["p_holm"].to_numpy(), holm_adjust(other["p"].to_numpy()))


def test_holm_steps_down_in_order_of_p():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 at 0.05/4, 0.05/3, 0.05/2, 0.05/1: the third fails (0.03 > 0.025), so the
    # fourth is not rejected either, though 0.04 < 0.05 on its own
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_levels(p) == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])
    assert list(holm_adjust(p) <= 0.05) == [True, False, False, True]
    adjusted = holm_adjust([0.01, np.nan, 0.02])  # a configuration without a p-value is not in the family
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm_adjust([0.3, 0.3]) == pytest.approx([0.6, 0.6]) and holm_adjust([0.9, 0.8]) == pytest.approx([1, 1])


def test_adjusted_interval_agrees_with_holm_and_lies_between_raw_and_bonferroni():
    rng = np.random.default_rng(0)
    for _ in range(30):
        cells = {(f"t{i}", 2, 0.5): list(np.array(BASE5) + rng.normal(rng.normal(0, 2), 2, 5)) for i in range(4)}
        p = paired_differences(runs_table(cells, baseline=BASE5))
        excludes = (p["diff_hi_adj"] < 0) | (p["diff_lo_adj"] > 0)
        assert list(excludes) == list(p["p_holm"] <= 0.05)
        assert ((p["diff_lo_adj"] <= p["diff_lo"]) & (p["diff_hi_adj"] >= p["diff_hi"])).all()
        half = (p["diff_hi_adj"] - p["diff_lo_adj"]) / 2
        bonferroni = stats.t.ppf(1 - 0.05 / 4 / 2, 4) * p["diff_sd"] / math.sqrt(5)
        assert (half <= bonferroni + 1e-9).all()


def test_a_large_effect_survives_holm_and_the_verdict_claims_it():
    runs = family({"e5": LARGE, "minilm": NULL_A, "rnd": NULL_B})
    p = paired_differences(runs).set_index("teacher")
    assert p.loc["e5", "outcome_adjusted"] == "better than the baseline" and p.loc["e5", "p_holm"] < 1e-4
    text = verdict(runs)
    assert "**1 of 3 REPA configurations beat the baseline** after Holm's correction" in text
    assert "e5 L3 λ0.50 (-10.00 PPL)" in text and "not claimed" not in text
    assert "REPA does not measurably lower" not in text
    worse = verdict(family({"e5": [-d for d in LARGE], "minilm": NULL_A, "rnd": NULL_B}))
    assert "**0 of 3 REPA configurations beat" in worse and "Worse than the baseline after Holm's correction (1)" in worse


def test_a_borderline_effect_that_fails_holm_is_shown_raw_but_not_claimed():
    runs = family({"e5": LARGE, "minilm": BORDERLINE, "rnd": NULL_A})
    p = paired_differences(runs).set_index("teacher")
    assert p.loc["minilm", "p"] == pytest.approx(0.0337, abs=1e-4)
    assert p.loc["minilm", "outcome"] == "better than the baseline"             # raw: the interval excludes zero
    assert p.loc["minilm", "outcome_adjusted"] == "no detectable difference"    # Holm, step 2: 0.034 > 0.05 / 2
    assert p.loc["minilm", "p_holm"] == pytest.approx(2 * p.loc["minilm", "p"])
    assert p.loc["minilm", "diff_lo_adj"] < 0 < p.loc["minilm", "diff_hi_adj"]
    assert p.loc["minilm", "adj_level"] == pytest.approx(1 - 0.05 / 2)
    text = verdict(runs)
    assert "**1 of 3 REPA configurations beat the baseline**" in text
    assert "**not** after Holm's correction, so not claimed (1): minilm L3 λ0.50" in text
    assert "| better than the baseline | no detectable difference |" in text   # raw beside corrected
    # the step-down: with 0.021 instead, step 2 passes (Bonferroni's 3 x 0.021 = 0.061 would not)
    stronger = paired_differences(family({"e5": LARGE, "minilm": [-1, -2, -3, -0.5, -1.5], "rnd": NULL_A}))
    assert stronger.set_index("teacher").loc["minilm", "outcome_adjusted"] == "better than the baseline"
    # without the large effect in the family, the same borderline one is tested first, at 0.05 / 3
    alone = family({"e5": NULL_B, "minilm": BORDERLINE, "rnd": NULL_A})
    assert "**0 of 3 REPA configurations beat the baseline**" in verdict(alone)


def test_no_effect_claims_nothing():
    text = verdict(family({"e5": NULL_A, "minilm": NULL_B, "rnd": [0.5, -0.5, 0.2, -0.1, -0.3]}))
    assert "**0 of 3 REPA configurations beat the baseline**" in text
    assert "not claimed" not in text and "Worse than" not in text
    assert "REPA does not measurably lower the test perplexity after correction; that is not evidence" in text
    assert "as well as" not in text and "upper bound" not in text


def test_noise_section_compares_the_monte_carlo_error_with_the_paired_spread():
    runs = family({"e5": LARGE, "minilm": NULL_A, "rnd": NULL_B})
    text = verdict(runs)
    sd = float(np.median([np.std(d, ddof=1) for d in (LARGE, NULL_A, NULL_B)]))
    assert f"median SD {sd:.3f}" in text and "makes most of the paired spread" in text
    runs["test_ppl_mc_se"] = 1.2   # 2 x 1.2^2 against the paired variance: most of it
    assert "evaluation noise is most of the paired spread" in verdict(runs)


def test_power_matches_the_noncentral_t_and_known_sample_sizes():
    # one-sample / paired t-test, two-sided 0.05, 80 %: effect 0.5 SD needs 34, 1 SD needs 10 (G*Power's values)
    assert seeds_needed(0.5, 1.0, 0.05) == 34 and seeds_needed(1.0, 1.0, 0.05) == 10
    assert paired_power(0.5, 1.0, 34, 0.05) == pytest.approx(0.8078, abs=1e-4)
    assert paired_power(0.5, 1.0, 33, 0.05) < 0.8
    needed = [seeds_needed(d, 6.6, 0.05 / 3) for d in (2.0, 4.0, 8.0, 16.0)]
    assert needed == sorted(needed, reverse=True) and needed[0] > needed[-1]
    d = detectable_difference(6.6, 3, 0.05 / 3)
    assert paired_power(d, 6.6, 3, 0.05 / 3) == pytest.approx(0.8, abs=1e-6)
    assert detectable_difference(6.6, 6, 0.05 / 3) < d   # more seeds detect less
    assert pooled_sd([6.6, 20.6, 34.9], [3, 3, 3])[0] == pytest.approx(math.sqrt((6.6**2 + 20.6**2 + 34.9**2) / 3))


def test_power_table_pools_the_sd_when_seeds_are_few():
    few = paired_differences(family({"e5": LARGE, "minilm": NULL_A, "rnd": NULL_B}).query("seed < 3"))
    table = power_table({"test_ppl": few}, 5.0)
    assert (table["sd_source"] == "pooled").all() and table["sd_used"].nunique() == 1
    assert table["alpha_planning"].iloc[0] == pytest.approx(0.05 / 3)
    assert table["target_effect"].iloc[0] == pytest.approx(0.05 * np.mean(BASE5[:3]))
    five = paired_differences(family({"e5": LARGE, "minilm": NULL_A}))
    many, smaller = power_table({"test_ppl": five}, 5.0), power_table({"test_ppl": five}, 1.0)
    assert (many["sd_source"] == "own").all() and (many["sd_used"] == many["diff_sd"]).all()
    assert (smaller["seeds_needed"] > many["seeds_needed"]).all()   # a smaller target needs more seeds


def test_compare_writes_power_csv_and_the_corrected_columns(tmp_path):
    runs = family({"e5": LARGE, "minilm": BORDERLINE, "rnd": NULL_A})
    runs.to_parquet(tmp_path / "runs.parquet")
    compare_main(str(tmp_path / "runs.parquet"), [], None, [], [], [], str(tmp_path / "tables"), "t",
                 target_effect_pct=10.0)
    paired = pd.read_csv(tmp_path / "tables" / "paired.csv")
    assert {"p", "p_holm", "diff_lo_adj", "diff_hi_adj", "outcome_adjusted", "diff_lo", "outcome"} <= set(paired)
    power = pd.read_csv(tmp_path / "tables" / "power.csv")
    assert (power["target_effect_pct"] == 10.0).all() and len(power) == 3
    assert "## Power: what these seeds could detect" in (tmp_path / "tables" / "verdict.md").read_text()


def test_a_non_significant_feature_difference_is_not_read_as_equality():
    from types import SimpleNamespace

    from repa_mdlm.analysis.controls import feature_contrast

    probe = dict(sequences=500, effective_rank=10.0, anisotropy_hi=0.31)
    teacher = SimpleNamespace(neighbour_hits=100, anisotropy=0.3, **probe)
    control = SimpleNamespace(neighbour_hits=98, anisotropy=0.9, **{**probe, "anisotropy_hi": 0.91})
    text = "\n".join(feature_contrast("e5", "e5-random", teacher, control))
    assert "**not distinguishable**" in text and "**distinguishable**" in text  # content no, geometry yes
    assert "as well as" not in text and "does not show that the two retrieve related text equally well" in text
