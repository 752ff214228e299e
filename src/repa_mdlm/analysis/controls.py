"""Does the teacher's knowledge help, or would any extra target do? Pretrained teachers against
random-weight controls.

Two kinds of control:
- a **matched twin** (`control_of: <teacher>`): the teacher's own architecture and tokenizer with
  random weights, reading the same text the same way. Teacher minus twin isolates what the weights
  learned; this is the comparison the verdict leads with.
- an **unmatched control** (`init_from_config`): a random network of some shape, usually reading the
  student's ids. It differs from a pretrained teacher in more than its weights, so the verdict says so.

Each comparison is paired by (layer, weight, seed): cells of one seed share initial weights, data
order, diffusion times and masks. Each kind is one family, corrected by Holm (correction.py), in test
PPL (paired.paired_family). The feature probe's contrasts (neighbour retrieval, geometry) use Newcombe
intervals at the Bonferroni level 1 - alpha/m over a kind's m contrasts. Newcombe's interval treats
each sequence's hit as an independent trial and the two teachers as independent samples; neither
holds exactly (both read the same sequences, and neighbouring sequences share a chapter), so the
probe's intervals are approximate, in either direction, and the probe is a secondary endpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import ARM_SEPARATOR, BASELINE, arm_label
from .correction import ALPHA, METHOD
from .format import interval, number
from .paired import paired_family
from .power import TWIN_FAMILY
from .stats import two_proportion_diff


def control_family(runs: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per (teacher, control, layer, weight): the teacher's test PPL minus the control's, paired
    by (layer, weight, seed), with its raw 95 % interval; Holm's columns over all rows (one family)."""
    comparisons = []
    for teacher, control in pairs:
        cells = runs[runs["teacher"].isin([teacher, control])]
        for (layer, weight), g in cells.groupby(["layer", "weight"], sort=True):
            by_teacher = {t: rows.set_index("seed")["test_ppl"] for t, rows in g.groupby("teacher")}
            if teacher in by_teacher and control in by_teacher:
                comparisons.append(({"teacher": teacher, "control": control, "layer": int(layer),
                                     "weight": float(weight)}, by_teacher[teacher], by_teacher[control],
                                    (f"better than {control}", f"worse than {control}")))
    return paired_family(comparisons, ["teacher", "control", "layer", "weight"])


def control_differences(runs: pd.DataFrame, teacher: str, control: str) -> pd.DataFrame:
    """control_family for one pair (its Holm columns then cover that pair's configurations only)."""
    return control_family(runs, [(teacher, control)])


def pretrained_teachers(labels, controls, twins) -> list[str]:
    """The teacher labels whose teacher is pretrained: not an unmatched control nor a twin, in any arm."""
    random_weights = set(controls) | {w.partition(ARM_SEPARATOR)[0] for w in twins}
    return [t for t in labels if t.partition(ARM_SEPARATOR)[0] not in random_weights]


def per_arm_families(runs: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """control_family with one Holm family per arm (the paper's pooled cells, and each other arm's:
    teacher+tag against control+tag), so that adding an arm to a grid leaves the pooled family as it was.
    With more than one arm, column `arm` says which (pooled: the paper's)."""
    by_arm: dict[str, list[tuple[str, str]]] = {}
    for teacher, control in pairs:
        by_arm.setdefault(teacher.partition(ARM_SEPARATOR)[2], []).append((teacher, control))
    if len(by_arm) <= 1:
        return control_family(runs, pairs)
    return pd.concat([control_family(runs, arm_pairs).assign(arm=tag or "pooled") for tag, arm_pairs in by_arm.items()],
                     ignore_index=True)


def twin_families(runs: pd.DataFrame, twin_of: dict[str, str]) -> pd.DataFrame:
    """Each teacher against its twin, one Holm family per arm (per_arm_families)."""
    return per_arm_families(runs, list(twin_of.items()))


def unmatched_families(runs: pd.DataFrame, pretrained: list[str], controls: list[str]) -> pd.DataFrame:
    """Every pretrained teacher against every unmatched control of the same arm (teacher+tag against
    control+tag), one Holm family per arm."""
    present = set(runs["teacher"])
    pairs = [(t, label) for t in pretrained for c in controls
             if (label := arm_label(c, t.partition(ARM_SEPARATOR)[2])) in present]
    return per_arm_families(runs, pairs)


def twin_power_families(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The twin comparisons' power families (power.power_table): one per arm where there are several."""
    if "arm" not in table:
        return {TWIN_FAMILY: table}
    return {TWIN_FAMILY if arm == "pooled" else f"{TWIN_FAMILY}:{arm}": rows for arm, rows in table.groupby("arm")}


def arm_family(runs: pd.DataFrame) -> pd.DataFrame:
    """Every configuration of another arm (teacher+tag) against the same teacher's configuration in the
    paper's arm and against the baseline, paired by (layer, weight, seed): one Holm family."""
    labels = sorted({t for t in runs["teacher"] if ARM_SEPARATOR in str(t)})
    if not labels:
        return control_family(runs, [])
    present = set(runs["teacher"])
    pairs = [(label, label.partition(ARM_SEPARATOR)[0]) for label in labels
             if label.partition(ARM_SEPARATOR)[0] in present]
    base = runs[runs["teacher"] == BASELINE]
    arms = runs[runs["teacher"].isin(labels)]
    replicas = [base.assign(layer=layer, weight=weight) for (layer, weight), _ in arms.groupby(["layer", "weight"])]
    widened = pd.concat([runs[runs["teacher"] != BASELINE], *replicas], ignore_index=True)
    return control_family(widened, pairs + ([(label, BASELINE) for label in labels] if len(base) else []))


def arms_section(table: pd.DataFrame) -> list[str]:
    """The verdict's section on other arms (token-wise, an MLP projector, a lambda schedule)."""
    if not len(table):
        return []
    lines = ["## Other arms: against the paper's pooled alignment and against the baseline", "",
             "Each configuration of another arm (teacher+tag: tok = token-wise, mlp<h> = REPA's MLP projector, "
             "stop/decay = a lambda schedule) against the same teacher, layer and λ in the paper's arm, and "
             f"against the baseline; test PPL, paired by seed; the {len(table)} comparisons are one family, "
             f"corrected by {METHOD}.", ""]
    for r in table.itertuples():
        sign = {-1: "**lower**", 1: "**higher**"}.get(int(r.holm_sign), "not shown to differ")
        lines.append(f"- {r.teacher} L{r.layer} λ{r.weight:.2f} against {r.control}: "
                     f"{number(r.diff_mean, 2, True)} PPL, {interval(r.diff_lo_adj, r.diff_hi_adj, 2, True)} "
                     f"after {METHOD} (p_{METHOD} {r.p_holm:.3g}): {sign}.")
    return lines + [""] + _family_lines(table, "against") + [""]


def controls_table(twins: pd.DataFrame, unmatched: pd.DataFrame, arms: pd.DataFrame | None = None) -> pd.DataFrame:
    """controls.csv: the control families, each Holm-corrected on its own (`family`: twin, unmatched or
    arm: another arm against the paper's and the baseline)."""
    parts = [t.assign(family=name) for name, t in (("twin", twins), ("unmatched", unmatched), ("arm", arms))
             if t is not None and len(t)]
    if not parts:
        return pd.DataFrame(columns=["family", "teacher", "control", "layer", "weight"])
    table = pd.concat(parts, ignore_index=True)
    return table[["family"] + [c for c in table if c != "family"]]


def twin_headline(table: pd.DataFrame) -> list[str]:
    """The verdict's first line when the grid has twins: the primary question, teacher against twin."""
    if not len(table):
        return []
    won = int((table["holm_sign"] == -1).sum())
    over = (f"over those {len(table)}" if "arm" not in table else
            f"within each arm ({', '.join(dict.fromkeys(table['arm']))})")
    return [f"- **Does the teacher's knowledge help? {won} of {len(table)} teacher configurations beat their "
            f"random twin** in test PPL after {METHOD}'s correction {over} (section below); the "
            "lines after this one compare each configuration, twins included, with the baseline."]


def parse_twins(twins: list[str]) -> dict[str, str]:
    """`teacher:twin` items (the compare rule's --twins) as {teacher: twin}; empty items are skipped."""
    pairs = {}
    for item in twins:
        if not item:
            continue
        teacher, sep, twin = item.partition(":")
        if not sep or not teacher or not twin:
            raise ValueError(f"--twins {item!r}: give each pair as <teacher>:<twin>")
        pairs[teacher] = twin
    return pairs


# ---------------------------------------------------------------------- feature probe

def feature_contrast(teacher: str, control: str, a, b, family_size: int = 1) -> list[str]:
    """Verdict lines: does the pretrained teacher's feature probe differ from the control's? Intervals
    at the Bonferroni level 1 - ALPHA / family_size (95 % for a single contrast)."""
    level = 1.0 - ALPHA / family_size
    z = _normal_quantile(1.0 - (1.0 - level) / 2.0)
    d, lo, hi = two_proportion_diff(int(a.neighbour_hits), int(a.sequences), int(b.neighbour_hits),
                                    int(b.sequences), z=z)
    content = lo > 0 or hi < 0
    da = a.anisotropy - b.anisotropy
    ha = math.hypot(a.anisotropy_hi - a.anisotropy, b.anisotropy_hi - b.anisotropy) * z / 1.96
    geometry = abs(da) > ha
    where = f"{100 * level:.4g} % CI" + (f", Bonferroni over {family_size}" if family_size > 1 else "")
    return [
        f"- **Features, content:** {teacher} minus {control} in neighbour top-1: {d:+.3f} ({where} [{lo:+.3f}, "
        f"{hi:+.3f}]): {'**distinguishable**' if content else '**not distinguishable**'}. Newcombe's interval, "
        "approximate: the hits are not independent trials (both read the same sequences, which share chapters).",
        f"- **Features, geometry:** {teacher} minus {control} in anisotropy: {da:+.3f} ({where} [{da - ha:+.3f}, "
        f"{da + ha:+.3f}]); effective rank {a.effective_rank:.1f} against {b.effective_rank:.1f}: "
        f"{'**distinguishable**' if geometry else '**not distinguishable**'}. Random networks are highly "
        "anisotropic too, so geometry alone says nothing about knowledge.",
        f"- So {control} is " + ("distinguishable from the pretrained teacher by what its features retrieve"
                                 if content else "**not** shown to differ from the pretrained teacher in what its "
                                 "features retrieve (an interval that includes zero does not show that the two "
                                 "retrieve related text equally well)") + ".",
    ]


def _normal_quantile(p: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(p))


# ---------------------------------------------------------------------- verdict sections

def _family_lines(table: pd.DataFrame, what: str) -> list[str]:
    lines = [f"| teacher | {what} | layer | λ | seeds | Δ PPL | raw 95 % CI | p | {METHOD} CI (level) | "
             f"p_{METHOD} | after {METHOD} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in table.itertuples():
        level = f" ({100 * r.adj_level:.2f} %)" if np.isfinite(r.adj_level) else ""
        lines.append(f"| {r.teacher} | {r.control} | {r.layer} | {r.weight:.2f} | {r.n_seeds} | "
                     f"{number(r.diff_mean, 2, True)} | {interval(r.diff_lo, r.diff_hi, 2, True)} | {r.p:.3g} | "
                     f"{interval(r.diff_lo_adj, r.diff_hi_adj, 2, True)}{level} | {r.p_holm:.3g} | "
                     f"{r.outcome_adjusted} |")
    return lines


def twins_section(twins: dict[str, str], table: pd.DataFrame, probe: pd.DataFrame | None) -> list[str]:
    """The verdict's primary control: each pretrained teacher against its matched random twin."""
    lines = ["## Does the teacher's knowledge help? Each teacher against its random twin", ""]
    if not twins:
        return lines + ["No teacher has a matched random twin (`control_of`) in this grid: whether the "
                        "pretrained weights matter, rather than the architecture, tokenizer and extra target, "
                        "is not tested.", ""]
    lines += ["A twin is the teacher's own architecture and tokenizer with random weights, reading the same "
              "text the same way: teacher minus twin isolates what the weights learned. Test PPL, paired by "
              "(layer, λ, seed); " + (f"the {len(table)} comparisons are one family, corrected by {METHOD}. "
                                       if "arm" not in table else
                                       f"the comparisons of each arm ({', '.join(dict.fromkeys(table['arm']))}) are "
                                       f"one family, corrected by {METHOD} on its own. ") + "Each twin is "
              "one seeded random draw, shared by every student seed: the intervals cover the students' seeds, "
              "not other random draws of the twin.", ""]
    beat, worse = table[table["holm_sign"] == -1], table[table["holm_sign"] == 1]
    lines.append(f"- **{len(beat)} of {len(table)} teacher configurations beat their twin** after {METHOD}'s "
                 "correction" + (": " + ", ".join(f"{r.teacher} L{r.layer} λ{r.weight:.2f} "
                                                  f"({number(r.diff_mean, 2, True)} PPL)" for r in beat.itertuples())
                                 if len(beat) else "") + ".")
    if len(worse):
        lines.append(f"- Worse than their twin after {METHOD}'s correction: "
                     + ", ".join(f"{r.teacher} L{r.layer} λ{r.weight:.2f}" for r in worse.itertuples()) + ".")
    if beat.empty:
        lines.append("- So these seeds do not show that the teachers' pretrained knowledge lowers the test "
                     "perplexity beyond what their random twins do; that is not evidence that it does not "
                     "(see the power of this family below).")
    lines += [""] + (_family_lines(table, "twin") if len(table) else ["No cells of a teacher and its twin share a "
                                                                      "layer, weight and seed."]) + [""]
    if probe is not None:  # the probe reads pooled features: one contrast per plain teacher and twin
        probed = [(t, w) for t, w in twins.items() if t in probe.index and w in probe.index]
        for teacher, twin in probed:
            lines += feature_contrast(teacher, twin, probe.loc[teacher], probe.loc[twin], len(probed))
        lines.append("")
    return lines


def unmatched_section(controls: list[str], teachers: list[str], table: pd.DataFrame,
                      probe: pd.DataFrame | None) -> list[str]:
    """Pretrained teachers against random-init controls that are not their twins."""
    if not controls:
        return []
    lines = ["## Against the unmatched random control", "",
             f"An `init_from_config` control ({', '.join(controls)}) has random weights but not the teacher's "
             "architecture or tokenizer (it reads the student's ids), so a difference from it mixes the "
             f"teacher's knowledge with everything else that differs. Test PPL, "
             + ("one family" if "arm" not in table else "one family per arm") + f", {METHOD}-corrected.", ""]
    if probe is not None:
        contrasts = [(t, c) for t in teachers for c in controls if t in probe.index and c in probe.index]
        for teacher, control in contrasts:
            lines += feature_contrast(teacher, control, probe.loc[teacher], probe.loc[control], len(contrasts))
        lines.append("")
    return lines + (_family_lines(table, "control") if len(table) else
                    ["No cells of a teacher and a control share a layer, weight and seed."]) + [""]
