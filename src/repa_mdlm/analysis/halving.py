"""Successive halving over a sweep's REPA configurations: what each rung keeps, and how good the shortcut
would have been on a finished full grid (workflow/rules/halving.smk trains by these rungs when halving.enabled).

A configuration is a teacher x layer x weight of the grid. Its seeds are judged together, by their mean
validation PPL (never the test set) at the rung's step, and continue or stop together, so the paired
comparisons with the baseline stay paired. At each rung, over the configurations still running:
- they are ranked by that mean, lowest first; one whose seeds lack a finite value at the step ranks
  last and stops, with that reason;
- the best ceil(n / eta) continue, at least one always;
- a configuration whose mean equals the last kept one's continues too (ties keep both);
- the baseline is not ranked: it runs to the end.
A rung is judged at the last validation step at or before its fraction of train.steps (the logs validate
every train.val_every steps), so a stopped cell has trained exactly the first steps of its full run and
its log is a prefix of the full run's: applied to a full grid's own logs, the rule keeps exactly the
cells a halving run would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Cell, ConfigError, weight_text
from ..config.halving import eta_errors, rung_steps


@dataclass(frozen=True)
class Decision:
    """One configuration at one rung."""

    configuration: str
    rung: int
    """1 for the first rung."""
    step: int
    metric: float
    """Mean validation PPL over the configuration's seeds at the step (NaN: not available)."""
    rank: int
    """1 = the best at this rung."""
    kept: bool
    why: str


def configuration_of(cell: Cell) -> str:
    """The cell's name without its seed: what halving judges."""
    return "baseline" if cell.is_baseline else f"{cell.teacher}_L{cell.layer}_w{weight_text(cell.weight)}"


def judge(means: dict[str, float], eta: int, rung: int, step: int) -> list[Decision]:
    """One rung's decisions over the configurations still running (mean validation PPL each)."""
    errors = eta_errors(eta, "halving.eta (--eta)")
    if errors:
        raise ConfigError(errors[0])
    finite = sorted((v, c) for c, v in means.items() if np.isfinite(v))
    missing = sorted(c for c, v in means.items() if not np.isfinite(v))
    quota = max(1, math.ceil(len(means) / eta))
    cut = finite[min(quota, len(finite)) - 1][0] if finite else None
    decisions = []
    for rank, (value, name) in enumerate(finite, start=1):
        if rank <= quota:
            kept, why = True, f"rank {rank} of {len(means)}, within the best {quota}"
        elif value == cut:
            kept, why = True, f"rank {rank}, tied with the last kept (val PPL {value:.6g})"
        else:
            kept, why = False, f"rank {rank} of {len(means)}, outside the best {quota}"
        decisions.append(Decision(name, rung, step, float(value), rank, kept, why))
    for offset, name in enumerate(missing, start=len(finite) + 1):
        decisions.append(Decision(name, rung, step, float("nan"), offset, not finite and offset == 1,
                                  "no finite validation PPL at this step for every seed"))
    return decisions


def configuration_means(values: dict[str, float]) -> dict[str, float]:
    """{cell name: value} -> {configuration: mean over its seeds}, the baseline left out. The seeds are
    averaged in name order, so a real halving run and its simulation compute the same float."""
    seeds_of: dict[str, list[float]] = {}
    for name in sorted(values):
        cell = Cell.parse(name)
        if not cell.is_baseline:
            seeds_of.setdefault(configuration_of(cell), []).append(values[name])
    return {c: float(np.mean(v)) for c, v in sorted(seeds_of.items())}


def simulate(val_ppl: dict[str, dict[int, float]], eta: int, at_steps: list[int]) -> list[Decision]:
    """Halving on a full grid's validation curves ({cell name: {step: val PPL}}): every rung but the last
    (the end) judges the configurations still running. The baseline is left out."""
    running = set(configuration_means({name: 0.0 for name in val_ppl}))
    decisions: list[Decision] = []
    for rung, step in enumerate(at_steps[:-1], start=1):
        means = configuration_means({name: curve.get(step, np.nan) for name, curve in val_ppl.items()
                                     if configuration_of(Cell.parse(name)) in running})
        judged = judge(means, eta, rung, step)
        decisions += judged
        running = {d.configuration for d in judged if d.kept}
    return decisions


DECISION_COLUMNS = ("cell", "configuration", "rung", "step", "val_ppl", "metric", "rank", "decision", "why")
"""tables/halving/rung<k>.csv and tables/halving.csv: one row per cell judged at a rung."""


def judge_rung_main(records: list[str], rung: int, eta: int, out: str) -> list[Decision]:
    """Rung `rung`'s decisions over the cells' rung records (training.rungs), one CSV row per cell."""
    import csv
    import io

    from ..io import DataError, atomic_write_text, read_json_object

    recs = {r["cell"]: r for r in (read_json_object(p, "rung record", rule="train_rung") for p in records)}
    steps = sorted({r["step"] for r in recs.values()})
    if len(steps) != 1:
        raise DataError(f"rung {rung}: its records are at steps {steps}, not at one step: {records[:3]}")
    decisions = judge(configuration_means({c: r["val_ppl"] for c, r in recs.items()}), eta, rung, steps[0])
    by_configuration = {d.configuration: d for d in decisions}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(DECISION_COLUMNS)
    for name in sorted(recs, key=lambda c: (by_configuration[configuration_of(Cell.parse(c))].rank, c)):
        d = by_configuration[configuration_of(Cell.parse(name))]
        writer.writerow([name, d.configuration, rung, d.step, repr(float(recs[name]["val_ppl"])), repr(d.metric),
                         d.rank, "kept" if d.kept else "stopped", d.why])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text.getvalue())
    return decisions


def stopped_cells(decisions_csv: str) -> list[tuple[str, int]]:
    """(cell, step) of every cell a rung's decisions stop (read at DAG time: the csv module alone)."""
    import csv

    with open(decisions_csv, newline="") as f:
        return [(row["cell"], int(row["step"])) for row in csv.DictReader(f) if row["decision"] == "stopped"]


def kept_configurations(decisions_csv: str) -> set[str]:
    """The configurations a rung's decisions keep (read at DAG time: the csv module alone)."""
    import csv

    with open(decisions_csv, newline="") as f:
        return {row["configuration"] for row in csv.DictReader(f) if row["decision"] == "kept"}


def training_steps(cells: list[str], decisions: list[Decision], steps: int) -> int:
    """Optimisation steps halving trains: each cell to the rung where its configuration stopped, else to the end."""
    stopped = {d.configuration: d.step for d in decisions if not d.kept}
    return sum(stopped.get(configuration_of(Cell.parse(c)), steps) for c in cells)


def planned_steps(configurations: int, seeds: int, baselines: int, at_steps: list[int], eta: int) -> int:
    """The optimisation steps a halving sweep trains, before it knows any result: every configuration's
    seeds to the first rung, then ceil(n / eta) of them (at least 1) from each rung to the next, and the
    baseline cells to the end. Ties at a cut can only add to it."""
    total, running, before = baselines * at_steps[-1], configurations, 0
    for step in at_steps:
        total += running * seeds * (step - before)
        running, before = max(1, math.ceil(running / eta)), step
    return total


def _spearman(a: pd.Series, b: pd.Series) -> float:
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 3:
        return float("nan")
    ranks = both.rank(method="average")
    return float(np.corrcoef(ranks.iloc[:, 0], ranks.iloc[:, 1])[0, 1])


def shortcut_quality(decisions: list[Decision], final_test_ppl: dict[str, float]) -> dict:
    """How good the shortcut is against the full grid's final test PPL ({configuration: mean over seeds}):
    whether the best and the top 3 survive, and each rung's rank correlation (Spearman) between its
    validation PPL and the final test PPL."""
    last = max((d.rung for d in decisions), default=None)
    survivors = set(final_test_ppl) if last is None else {d.configuration for d in decisions
                                                         if d.rung == last and d.kept}
    ranked = sorted((v, c) for c, v in final_test_ppl.items() if np.isfinite(v))
    best = [c for _, c in ranked[:3]]
    test = pd.Series(final_test_ppl, dtype=float)
    rungs = {}
    for rung in sorted({d.rung for d in decisions}):
        val = pd.Series({d.configuration: d.metric for d in decisions if d.rung == rung}, dtype=float)
        rungs[rung] = _spearman(val, test)
    return {"best": best[0] if best else None, "best_survives": bool(best) and best[0] in survivors,
            "top3": best, "top3_surviving": [c for c in best if c in survivors],
            "survivors": sorted(survivors), "spearman_by_rung": rungs}


def simulate_main(logs: list[str], metrics: list[str], out_dir: str, eta: int, rungs: list[float], steps: int,
                  val_every: int) -> dict:
    """halving_simulated.csv (one row per configuration and rung) and halving_simulated.md (the compute
    and the shortcut's quality) in out_dir, from a finished full grid's training logs and metrics.json."""
    from ..io import atomic_write_text, read_json_object
    from .runs import read_val_curve

    at = rung_steps(rungs, steps, val_every)
    curves = {Path(p).parent.name: dict(zip(*read_val_curve(p).to_dict("list").values())) for p in logs}
    decisions = simulate(curves, eta, at)
    full, halved = len(curves) * steps, training_steps(list(curves), decisions, steps)
    test: dict[str, list[float]] = {}
    for path in metrics:
        m = read_json_object(path, "metrics", rule="evaluate")  # its content checksum verified
        test.setdefault(configuration_of(Cell.parse(m["cell"])), []).append(float(m["test_ppl"]))
    quality = shortcut_quality(decisions, {c: float(np.mean(v)) for c, v in test.items() if c != "baseline"})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "halving_simulated.csv", pd.DataFrame([asdict(d) for d in decisions]).to_csv(index=False))
    lines = [f"# Successive halving, simulated on the full grid's validation logs (eta {eta}, rungs {list(rungs)} "
             f"= steps {at})", "",
             f"- training steps: {halved} of the full grid's {full} ({100 * halved / full:.1f} %), {len(curves)} cells",
             f"- the full grid's best configuration by test PPL ({quality['best']}) "
             + ("survives" if quality["best_survives"] else "is stopped"),
             f"- of its top 3 ({', '.join(quality['top3'])}), {len(quality['top3_surviving'])} "
             + ("survives" if len(quality["top3_surviving"]) == 1 else "survive"),
             "- rank correlation (Spearman) of each rung's validation PPL with the final test PPL: "
             + ", ".join(f"rung {r} (step {s}): {v:.2f}" for (r, v), s in zip(quality["spearman_by_rung"].items(), at))]
    atomic_write_text(out / "halving_simulated.md", "\n".join(lines) + "\n")
    return {"steps": halved, "full_steps": full, **quality}
