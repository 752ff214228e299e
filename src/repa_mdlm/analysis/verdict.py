"""Does REPA help? Paired comparisons with the baseline, and the verdict they support.

Cells of one seed share the student's initial weights, the data order, the diffusion times
and the masks, and every cell is scored on the same test noise. The comparison with the
baseline is therefore paired by seed: for each REPA configuration (teacher, layer, weight),
the per-seed differences d_s = PPL(cell, s) - PPL(baseline, s) get a Student-t 95 % interval
with n_seeds - 1 degrees of freedom, and a paired t-test p-value. The configurations of a sweep
are one family: Holm's correction (correction.py) adjusts the p-values and intervals, and a
configuration "beats the baseline" only when it survives the correction (its adjusted interval
lies below zero); the raw result is shown beside it. power.py says what the seeds could detect.

Beside it, this module reports:
- the step at which each REPA cell first reaches its seed's baseline's final validation PPL
  (the paper's Figure 2 question);
- whether the baseline learned at all: its test PPL against the corpus's unigram PPL, and
  whether its validation curve was still falling at the end;
- the evaluation's Monte Carlo error beside the spread between seeds;
- whether each teacher's features carry structure that a random-init control's lack
  (`feature_structure`), and whether the pretrained teacher's cells differ from the control's.

Everything is computed from the runs table, the training logs, the token arrays and the
teachers' cached features: never typed in, never tuned after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ARM_SEPARATOR
from ..io import atomic_write, atomic_write_text
from ..layout import COMPARISON_FILES
from .controls import (
    arm_family,
    arms_section,
    controls_table,
    parse_twins,
    pretrained_teachers,
    twin_families,
    twin_headline,
    twin_power_families,
    twins_section,
    unmatched_families,
    unmatched_section,
)
from .correction import METHOD
from .feature_probe import feature_structure, load_probe_features
from .format import interval, number
from .paired import beyond_metrics, beyond_test_ppl, metric_families, paired_differences
from .power import ARM_FAMILY, arm_power_section, power_section, power_table, twin_power_sections
from .runs import baseline_runs, mean_curve, read_val_curve, repa_runs, repa_teachers, train_logs_by_cell
from .stats import mean_ci95

FLAT_DROP_PCT = 2.0
"""A validation curve that fell by less than this over the last quarter of training is called flat."""


# ------------------------------------------------------------- training curves

def first_step_at_or_below(curve: pd.DataFrame, level: float) -> int | None:
    hit = curve[curve["val_ppl"] <= level]
    return None if hit.empty else int(hit["step"].iloc[0])


def steps_to_baseline(runs: pd.DataFrame, train_logs: dict[str, str]) -> pd.DataFrame:
    """Per REPA cell: the first logged step at which its validation PPL is at or below its own
    seed's baseline's final validation PPL (None: never within training)."""
    curves = {cell: read_val_curve(path) for cell, path in train_logs.items()}
    base = baseline_runs(runs)
    base_final = {int(r.seed): curves[r.cell]["val_ppl"].iloc[-1] for r in base.itertuples()
                  if r.cell in curves and not curves[r.cell].empty}
    rows = []
    for r in repa_runs(runs).itertuples():
        curve = curves.get(r.cell)
        if curve is None or curve.empty or int(r.seed) not in base_final:
            continue
        level = float(base_final[int(r.seed)])
        rows.append({"cell": r.cell, "teacher": r.teacher, "layer": int(r.layer), "weight": float(r.weight),
                     "seed": int(r.seed), "baseline_final_val_ppl": level,
                     "final_step": int(curve["step"].iloc[-1]), "step": first_step_at_or_below(curve, level)})
    return pd.DataFrame(rows, columns=["cell", "teacher", "layer", "weight", "seed", "baseline_final_val_ppl",
                                       "final_step", "step"])


def curve_trend(train_logs: list[str]) -> dict:
    """How the mean validation curve (over the given runs) ended: the relative drop over the last
    quarter of training, and 'still falling' / 'flattened' / 'rising' by FLAT_DROP_PCT."""
    curve = mean_curve(train_logs, read_val_curve)
    if curve.empty:
        return {"trend": "unknown (no validation rows)"}
    mean = pd.Series(curve["value"].to_numpy(), index=curve["step"].to_numpy())
    last_step = int(mean.index[-1])
    earlier = mean[mean.index <= 0.75 * last_step]
    if earlier.empty or earlier.index[-1] == last_step:
        return {"trend": "unknown (too few validation rows)"}
    start, end = float(earlier.iloc[-1]), float(mean.iloc[-1])
    drop = 100.0 * (start - end) / start
    trend = "still falling" if drop > FLAT_DROP_PCT else ("rising" if drop < -FLAT_DROP_PCT else "flattened")
    return {"trend": trend, "from_step": int(earlier.index[-1]), "to_step": last_step,
            "from_val_ppl": start, "to_val_ppl": end, "drop_pct": drop}


# ---------------------------------------------------------------------- noise

def noise_summary(runs: pd.DataFrame, paired: pd.DataFrame) -> dict:
    """The evaluation's Monte Carlo error (largest over cells) beside the spread between seeds
    (the baseline's standard deviation, and the median SD of the paired differences)."""
    mc = pd.to_numeric(runs.get("test_ppl_mc_se", pd.Series(dtype=float)), errors="coerce").dropna()
    base = baseline_runs(runs)["test_ppl"].to_numpy(float)
    return {"mc_se_max": float(mc.max()) if len(mc) else float("nan"),
            "mc_se_median": float(mc.median()) if len(mc) else float("nan"),
            "baseline_seed_sd": float(np.std(base, ddof=1)) if len(base) > 1 else float("nan"),
            "paired_diff_sd_median": float(paired["diff_sd"].median()) if len(paired) else float("nan")}


# ---------------------------------------------------------------------- verdict

@dataclass
class VerdictInputs:
    """Everything the verdict states: the runs table and what `repa-mdlm compare` computed from it."""

    runs: pd.DataFrame
    paired: pd.DataFrame
    """paired_differences(runs)"""
    steps: pd.DataFrame
    """steps_to_baseline(runs, train_logs)"""
    trend: dict
    """curve_trend of the baseline's logs"""
    unigram: dict | None
    """data.dataset.unigram_perplexity of the data folder (None: not computed)"""
    noise: dict
    """noise_summary(runs, paired)"""
    features: pd.DataFrame
    """one feature_structure row per probed teacher (empty: no cached features)"""
    controls: list[str]
    """the unmatched random-init control teachers in the grid (init_from_config)"""
    control_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    """controls.control_family: every pretrained teacher against every unmatched control"""
    twins: dict[str, str] = field(default_factory=dict)
    """{pretrained teacher: its matched random twin (control_of)}"""
    twin_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    """controls.control_family: every teacher against its twin, one Holm family"""
    arm_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    """controls.arm_family: other arms against the paper's arm and the baseline, one Holm family"""
    title: str = "REPA study"
    beyond: pd.DataFrame | None = None
    """per cell: gen_ppl, entropy and zero_shot:<set> PPL columns, where measured (beyond_metrics)"""
    power: pd.DataFrame | None = None
    """power.power_table of every family (None: no power section)"""


def _config_name(r) -> str:
    return f"{r.teacher} L{r.layer} λ{r.weight:.2f} ({number(r.diff_mean, 2, True)} PPL)"


def _steps_text(steps: pd.DataFrame, teacher: str, layer: int, weight: float) -> str:
    s = steps[(steps["teacher"] == teacher) & (steps["layer"] == layer) & (steps["weight"] == weight)]
    if s.empty:
        return "n/a"
    parts = [("never" if pd.isna(v) else str(int(v))) for v in s.sort_values("seed")["step"]]
    final = int(s["final_step"].max())
    return " / ".join(parts) + f" (of {final})"


def _intro(v: VerdictInputs) -> list[str]:
    return [f"# {v.title}: verdict", "",
            "Computed by `repa-mdlm compare` from the runs table, the training logs, the token arrays and "
            "the teachers' cached features. Differences are paired by seed (cells of one seed share "
            "initial weights, data order, diffusion times and masks); raw intervals are 95 % Student-t "
            "intervals over the seeds, p-values two-sided paired t-tests. Each metric's REPA configurations "
            f"are one family, corrected by {METHOD}'s method (family-wise 95 %); what the verdict claims is "
            "what survives the correction.", ""]


def _raw_only_name(r) -> str:
    return f"{_config_name(r)[:-1]}; p {r.p:.3g}, p_{METHOD} {r.p_holm:.3g})"


def _headline(v: VerdictInputs) -> list[str]:
    paired = v.paired
    beat, worse = paired[paired["holm_sign"] == -1], paired[paired["holm_sign"] == 1]
    claimed = beat.index.union(worse.index)
    raw_only = paired[(paired["raw_sign"] != 0) & ~paired.index.isin(claimed)]
    undecided = paired[~paired.index.isin(claimed.union(raw_only.index))]
    names = lambda rows, name=_config_name: ", ".join(name(r) for r in rows.itertuples())
    lines = ["## Headline", ""] + twin_headline(v.twin_table)
    if paired.empty:
        return lines + ["- No REPA cell to compare with the baseline.", ""]
    m = int(paired["p"].notna().sum())
    lines.append(f"- **{len(beat)} of {len(paired)} REPA configurations beat the baseline** after {METHOD}'s "
                 f"correction over the {m} compared, with an adjusted interval that excludes zero"
                 + (": " + names(beat) if len(beat) else "") + ".")
    if len(worse):
        lines.append(f"- Worse than the baseline after {METHOD}'s correction ({len(worse)}): " + names(worse) + ".")
    if len(raw_only):
        lines.append(f"- Raw 95 % interval excludes zero but **not** after {METHOD}'s correction, so not claimed "
                     f"({len(raw_only)}): " + names(raw_only, _raw_only_name) + ".")
    if len(undecided):
        lines.append(f"- No difference these seeds can resolve, raw or corrected ({len(undecided)}): "
                     + names(undecided) + ".")
    if beat.empty:
        lines.append("- At this scale, REPA does not measurably lower the test perplexity after correction; that "
                     "is not evidence that it has no effect (see the power section).")
    return lines + [""]


def _learned(v: VerdictInputs) -> list[str]:
    b_mean, b_lo, b_hi, b_n = mean_ci95(baseline_runs(v.runs)["test_ppl"].to_numpy(float))
    lines, unigram, trend = ["## Did the models learn?", ""], v.unigram, v.trend
    if unigram:
        ratio = b_mean / unigram["unigram_ppl"]
        lines.append(f"- Baseline test ELBO perplexity: **{number(b_mean, 2)}** (mean of {b_n} seed(s)"
                     + (f", 95 % CI {interval(b_lo, b_hi, 2)}" if b_n > 1 else "") + ").")
        lines.append(f"- Unigram perplexity of the test split (token frequencies of the {unigram['train_tokens']:,} "
                     f"train tokens, add-one smoothing): **{number(unigram['unigram_ppl'], 2)}**.")
        lines.append(f"- Ratio {ratio:.3f}: the baseline " + ("**is at most half** the unigram perplexity: it uses "
                     "context." if ratio <= 0.5 else "is **not** below half the unigram perplexity: treat every "
                     "comparison below as a comparison of models that have barely learned."))
    if "drop_pct" in trend:
        lines.append(f"- Baseline validation curve (mean over seeds): **{trend['trend']}**; "
                     f"{number(trend['from_val_ppl'], 1)} at step {trend['from_step']} → "
                     f"{number(trend['to_val_ppl'], 1)} at step {trend['to_step']} "
                     f"({number(-trend['drop_pct'], 1, True)} % over the last quarter; "
                     f"'flattened' means within ±{FLAT_DROP_PCT:g} %).")
    else:
        lines.append(f"- Baseline validation curve: {trend.get('trend', 'unknown')}.")
    return lines + [""]


def _noise(v: VerdictInputs) -> list[str]:
    noise = v.noise
    mc, sd = noise["mc_se_median"], noise["paired_diff_sd_median"]
    lines = ["## Noise", "",
             f"- Evaluation Monte Carlo standard error of a cell's test PPL (diffusion times and masks, "
             f"test set held fixed): median {number(mc, 3)}, largest {number(noise['mc_se_max'], 3)}. Each is "
             "an estimate from one evaluation, not a bound: a single value can fall below the true error.",
             f"- Paired differences from the baseline (what the intervals are built from): median SD "
             f"{number(sd, 3)} over the configurations; for reference, the baseline's test PPL has SD "
             f"{number(noise['baseline_seed_sd'], 3)} between seeds."]
    if np.isfinite(mc) and np.isfinite(sd) and sd > 0:
        share = 2.0 * mc * mc / (sd * sd)
        reading = ("the spread between seeds, not the evaluation, makes most of the paired spread" if share < 0.25
                   else "evaluation noise is most of the paired spread: more evaluation draws would narrow the "
                   "intervals" if share > 0.5 else "evaluation noise is a sizeable minority of the paired spread")
        lines.append(f"- Two cells' evaluation errors, if independent (they share the test noise, so probably "
                     f"less), add 2·{number(mc, 3)}² to a paired difference's variance: {share:.2f} of the median "
                     f"paired variance {number(sd, 3)}²; {reading}.")
    return lines + [""]


def _paired_table(v: VerdictInputs) -> list[str]:
    lines = ["## Each REPA configuration against the baseline", "",
             f"Raw: the 95 % interval and the paired t-test's p. {METHOD}: the adjusted p and the interval at the "
             f"level at which {METHOD}'s step-down tests the configuration (shown beside it; it excludes zero "
             "exactly when the configuration survives the correction).", "",
             "| teacher | layer | λ | seeds | mean PPL | Δ PPL vs baseline | raw 95 % CI | p | "
             f"{METHOD} CI (level) | p_{METHOD} | Δ % | step reaching the baseline's final val PPL, per seed | "
             f"raw outcome | after {METHOD} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in v.paired.itertuples():
        level = f" ({100 * r.adj_level:.2f} %)" if np.isfinite(r.adj_level) else ""
        lines.append(f"| {r.teacher} | {r.layer} | {r.weight:.2f} | {r.n_seeds} | {number(r.ppl_mean, 2)} | "
                     f"{number(r.diff_mean, 2, True)} | {interval(r.diff_lo, r.diff_hi, 2, True)} | {r.p:.3g} | "
                     f"{interval(r.diff_lo_adj, r.diff_hi_adj, 2, True)}{level} | {r.p_holm:.3g} | "
                     f"{number(r.diff_pct, 1, True)} | {_steps_text(v.steps, r.teacher, r.layer, r.weight)} | "
                     f"{r.outcome} | {r.outcome_adjusted} |")
    return lines + [""]


def _feature_table(v: VerdictInputs) -> list[str]:
    features = v.features
    lines = ["## Teacher features: what each teacher's features retrieve", ""]
    if features.empty:
        return lines + ["No cached teacher features to probe (teacher_features: online); the feature probe was "
                        "not run."]
    lines += [f"Probe on the first {int(features['sequences'].max())} consecutive train sequences. Content: "
              "*neighbour top-1* is how often a sequence's nearest other sequence (cosine of centred "
              "features) is its neighbour in the text stream (chance ≈ "
              f"{features['chance'].iloc[0]:.4f}); *adjacent − random* is the centred cosine of neighbours "
              "minus that of random pairs. Geometry: *anisotropy* is the raw cosine of random pairs (near 1 "
              "for a random network); *effective rank* is the participation ratio of the feature covariance.",
              "",
              "| teacher | kind | dim | neighbour top-1 | 95 % CI | adjacent − random cos | anisotropy | 95 % CI "
              "| effective rank |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in features.itertuples():
        twin_of = {w: t for t, w in v.twins.items()}
        kind = (f"random twin of {twin_of[r.teacher]}" if r.teacher in twin_of
                else "random-init control" if r.teacher in v.controls else "pretrained")
        lines.append(f"| {r.teacher} | {kind} | {r.dim} | {r.neighbour_top1:.3f} | "
                     f"[{r.neighbour_top1_lo:.3f}, {r.neighbour_top1_hi:.3f}] | "
                     f"{r.adjacent_minus_random_cos:.3f} | {r.anisotropy:.3f} | "
                     f"[{r.anisotropy_lo:.3f}, {r.anisotropy_hi:.3f}] | {r.effective_rank:.1f} |")
    return lines + [""]


def _twins(v: VerdictInputs) -> list[str]:
    return twins_section(v.twins, v.twin_table, _probe(v))


def _controls(v: VerdictInputs) -> list[str]:
    teachers = pretrained_teachers(repa_teachers(v.runs), v.controls, v.twins.values())
    return unmatched_section(v.controls, teachers, v.control_table, _probe(v))


def _probe(v: VerdictInputs) -> pd.DataFrame | None:
    return v.features.set_index("teacher") if not v.features.empty else None


_CAVEATS = ["", "## What this does and does not mean", "",
            "- These are small models on a small corpus; the paper's effect sizes at 0.5 B parameters and "
            "655 M tokens need not carry over in either direction.",
            f"- \"Better\" means the paired difference survives {METHOD}'s correction over the sweep's configurations "
            "(its adjusted interval lies below zero); with few seeds the intervals are wide, so \"no detectable "
            "difference\" is not evidence of no effect.",
            "- The raw 95 % intervals are per configuration and not corrected; the headline uses only the "
            "corrected ones.", ""]


def _beyond(v: VerdictInputs) -> list[str]:
    return beyond_test_ppl(v.beyond) if v.beyond is not None else []


def _power(v: VerdictInputs) -> list[str]:
    return power_section(v.power) if v.power is not None else []


def _arms(v: VerdictInputs) -> list[str]:
    return arms_section(v.arm_table) + (arm_power_section(v.power) if len(v.arm_table) else [])


def verdict_markdown(v: VerdictInputs) -> str:
    """verdict.md: one section per question, each written from the numbers in ``v``: the primary
    comparison (teacher against twin) first, then against the baseline, then the checks."""
    sections = (_intro, _headline, _twins, lambda v: twin_power_sections(v.power), _arms, _paired_table, _power, _beyond, _feature_table,
                _controls, _learned, _noise)
    return "\n".join([line for section in sections for line in section(v)] + _CAVEATS)


# ---------------------------------------------------------------------- entry point

def compare_inputs(runs: pd.DataFrame, train_logs: dict[str, str], data_dir: str | None, teachers: list[str],
                   features: list[str], controls: list[str], title: str = "REPA study",
                   generative: list[str] = (), zero_shot: list[str] = (),
                   target_effect_pct: float = 5.0, twins: list[str] = ()) -> VerdictInputs:
    """Every comparison of the verdict, from the runs table, the training logs (by cell), the data
    folder (for the unigram PPL; None: skipped) and each teacher's cached feature file; twins are
    `teacher:twin` pairs (controls.parse_twins); the power section's target is target_effect_pct %
    of the reference's mean."""
    from ..data.dataset import unigram_perplexity

    paired = paired_differences(runs)
    steps = steps_to_baseline(runs, train_logs)
    trend = curve_trend([train_logs[c] for c in baseline_runs(runs)["cell"] if c in train_logs])
    unigram = unigram_perplexity(data_dir) if data_dir else None
    if features and len(features) != len(teachers):
        raise ValueError(f"--features has {len(features)} files for {len(teachers)} teachers; give one per teacher")
    probe = pd.DataFrame([{"teacher": t, **feature_structure(load_probe_features(p, teacher=t))}
                          for t, p in zip(teachers, features)])
    present, declared = set(runs["teacher"]), parse_twins(list(twins))
    twin_of = {t: w for t, w in declared.items() if t in present and w in present}
    plain = {t.partition(ARM_SEPARATOR)[0] for t in present}  # a control run in some arm only counts too
    controls = [c for c in controls if c in plain and c not in declared.values()]
    pretrained = pretrained_teachers(repa_teachers(runs), controls, declared.values())
    control_table = unmatched_families(runs, pretrained, controls)
    twin_table = twin_families(runs, twin_of)
    beyond = beyond_metrics(runs, list(generative), list(zero_shot))
    return VerdictInputs(runs=runs, paired=paired, steps=steps, trend=trend, unigram=unigram,
                         noise=noise_summary(runs, paired), features=probe, controls=controls,
                         control_table=control_table, twins=twin_of, twin_table=twin_table, arm_table=(arm_table := arm_family(runs)),
                         title=title,
                         beyond=beyond, power=power_table({**metric_families(paired, beyond),
                                                          **(twin_power_families(twin_table) if twin_of else {}),
                                                          **({ARM_FAMILY: arm_table} if len(arm_table) else {})},
                                                         target_effect_pct))


def compare_main(runs_path: str, logs: list[str], data_dir: str | None, teachers: list[str],
                 features: list[str], controls: list[str], out_dir: str, title: str,
                 generative: list[str] = (), zero_shot: list[str] = (), target_effect_pct: float = 5.0,
                 twins: list[str] = ()) -> list[Path]:
    """What `repa-mdlm compare` does (its options and defaults: cli.compare): paired.csv, controls.csv,
    power.csv, steps_to_baseline.csv, teacher_features.csv and verdict.md in out_dir (beside Table 1)."""
    v = compare_inputs(pd.read_parquet(runs_path), train_logs_by_cell(logs), data_dir, teachers, features,
                       controls, title, generative, zero_shot, target_effect_pct, twins)
    out = Path(out_dir)
    paired_csv, controls_csv, power_csv, steps_csv, features_csv, verdict_md = COMPARISON_FILES
    return [
        atomic_write(out / paired_csv, lambda p: v.paired.to_csv(p, index=False)),
        atomic_write(out / controls_csv, lambda p: controls_table(v.twin_table, v.control_table, v.arm_table).to_csv(
            p, index=False)),
        atomic_write(out / power_csv, lambda p: v.power.to_csv(p, index=False)),
        atomic_write(out / steps_csv, lambda p: v.steps.to_csv(p, index=False)),
        atomic_write(out / features_csv, lambda p: v.features.to_csv(p, index=False)),
        atomic_write_text(out / verdict_md, verdict_markdown(v)),
    ]
