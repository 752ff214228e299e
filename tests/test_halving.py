"""Successive halving's decision rule (analysis/halving.py): the rung steps, who a rung keeps (seeds
together, ties, missing values, at least one), the steps it trains, and the shortcut's quality on a
full grid's logs."""

import csv
import json
import math

import numpy as np
import pytest

from repa_mdlm.analysis.halving import (
    configuration_of,
    judge,
    rung_steps,
    shortcut_quality,
    simulate,
    simulate_main,
    training_steps,
)
from repa_mdlm.config import Cell, ConfigError


def test_rungs_fall_on_the_last_validation_step_at_or_before_their_fraction():
    assert rung_steps([0.11, 0.33, 1.0], 5000, 250) == [500, 1500, 5000]  # the paper: 550 -> 500, 1650 -> 1500
    assert rung_steps([1 / 6, 0.5, 1.0], 120, 20) == [20, 60, 120]
    assert rung_steps([1.0], 120, 20) == [120]


@pytest.mark.parametrize("rungs, why", [
    ([0.11, 0.33, 1.0], "fall on steps \\[0, 20, 120\\]"),  # the first rung before the first validation
    ([0.2, 0.3, 1.0], "fall on steps \\[20, 20, 120\\]"),   # two rungs on one step
    ([0.5, 0.2, 1.0], "increasing"),
    ([0.2, 0.5], "ending at 1.0"),
    ([], "ending at 1.0"),
])
def test_rungs_that_cannot_be_judged_are_refused_naming_the_key(rungs, why):
    with pytest.raises(ConfigError, match=rf"halving\.rungs.*{why}"):
        rung_steps(rungs, 120, 20)


def _kept(decisions):
    return sorted(d.configuration for d in decisions if d.kept)


def test_a_rung_keeps_the_best_third_ranked_by_validation_ppl():
    means = {f"c{i}": 100.0 + i for i in range(9)}
    decisions = judge(means, eta=3, rung=1, step=20)
    assert _kept(decisions) == ["c0", "c1", "c2"]
    assert [d.rank for d in sorted(decisions, key=lambda d: d.metric)] == list(range(1, 10))
    assert judge({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, eta=3, rung=1, step=20)[1].kept  # ceil(4 / 3) = 2


def test_ties_at_the_cut_keep_both_and_at_least_one_configuration_always_continues():
    assert _kept(judge({"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0, "e": 4.0, "f": 5.0}, 3, 1, 20)) == ["a", "b", "c"]
    assert _kept(judge({"only": 7.0}, 3, 1, 20)) == ["only"]
    assert _kept(judge({"a": 2.0, "b": 1.0}, 4, 1, 20)) == ["b"]


def test_a_configuration_without_a_finite_value_ranks_last_and_stops():
    decisions = {d.configuration: d for d in judge({"a": 1.0, "b": math.nan, "c": 2.0, "d": 3.0}, 2, 1, 20)}
    assert not decisions["b"].kept and decisions["b"].rank == 4 and "no finite" in decisions["b"].why
    assert _kept(decisions.values()) == ["a", "c"]


def test_eta_below_two_is_refused():
    with pytest.raises(ConfigError, match=r"halving\.eta"):
        judge({"a": 1.0}, 1, 1, 20)


def _curves(final: dict[str, float], seeds=(0,), early=None):
    """Validation curves at steps 20, 60, 120 for teacher t's layers: PPL falling to `final`."""
    early = early or {}
    out = {Cell("baseline", None, None, s).name: {20: 500.0, 60: 450.0, 120: 440.0} for s in seeds}
    for name, value in final.items():
        layer = int(name[1:])
        for s in seeds:
            out[Cell("t", layer, 0.5, s).name] = {20: early.get((name, s), value + 60), 60: value + 10, 120: value}
    return out


def test_seeds_are_judged_by_their_mean_and_continue_or_stop_together():
    final = {f"L{i}": 400.0 + i for i in range(1, 7)}
    # L6's seed 0 is the best of all at step 20, its seed 1 the worst: their mean ranks L6 last
    early = {("L6", 0): 300.0, ("L6", 1): 1000.0}
    decisions = simulate(_curves(final, seeds=(0, 1), early=early), eta=3, at_steps=[20, 60, 120])
    first = {d.configuration: d for d in decisions if d.rung == 1}
    assert first["t_L6_w0.50"].metric == pytest.approx(650.0) and not first["t_L6_w0.50"].kept
    assert _kept(first.values()) == ["t_L1_w0.50", "t_L2_w0.50"]
    assert _kept(d for d in decisions if d.rung == 2) == ["t_L1_w0.50"]
    assert "baseline" not in {d.configuration for d in decisions}
    cells = list(_curves(final, seeds=(0, 1)))
    # baseline 2 x 120, L1 2 x 120, L2 2 x 60, the other four 2 x 20 each
    assert training_steps(cells, decisions, 120) == 2 * 120 + 2 * 120 + 2 * 60 + 4 * 2 * 20


def test_the_shortcuts_quality_names_whether_the_best_survives_and_each_rungs_rank_correlation():
    final = {f"L{i}": 400.0 + i for i in range(1, 10)}
    decisions = simulate(_curves(final), eta=3, at_steps=[20, 60, 120])
    test = {f"t_{k}_w0.50": v for k, v in final.items()}
    quality = shortcut_quality(decisions, test)
    assert quality["best"] == "t_L1_w0.50" and quality["best_survives"]
    assert quality["spearman_by_rung"][1] == pytest.approx(1.0)
    # the best at the end was the worst early on: it is stopped at the first rung, and that is said
    early = {("L1", 0): 2000.0}
    decisions = simulate(_curves(final, early=early), eta=3, at_steps=[20, 60, 120])
    quality = shortcut_quality(decisions, test)
    assert not quality["best_survives"] and quality["spearman_by_rung"][1] < 1.0


def test_simulate_main_writes_the_rung_table_and_the_compute_from_logs_and_metrics(tmp_path):
    final = {f"L{i}": 400.0 + i for i in range(1, 10)}
    logs, metrics = [], []
    for name, curve in _curves(final).items():
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        rows = [{"step": 0, "val_ppl": 2000.0}] + [{"step": s, "val_ppl": v} for s, v in sorted(curve.items())]
        (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "metrics.json").write_text(json.dumps({"cell": name, "test_ppl": curve[120] + 1.0}))
        logs.append(str(run / "train_log.jsonl"))
        metrics.append(str(run / "metrics.json"))
    report = simulate_main(logs, metrics, str(tmp_path / "tables"), eta=3, rungs=[1 / 6, 0.5, 1.0], steps=120,
                           val_every=20)
    assert report["full_steps"] == 10 * 120
    assert report["steps"] == 2 * 120 + 2 * 60 + 6 * 20
    table = (tmp_path / "tables" / "halving_simulated.csv").read_text().splitlines()
    assert table[0] == "configuration,rung,step,metric,rank,kept,why" and len(table) == 1 + 9 + 3
    summary = (tmp_path / "tables" / "halving_simulated.md").read_text()
    assert "480 of the full grid's 1200 (40.0 %)" in summary and "(t_L1_w0.50) survives" in summary


def test_a_configuration_is_a_cell_without_its_seed():
    assert configuration_of(Cell("e5-pt", 7, 0.25, 3)) == "e5-pt_L7_w0.25"
    assert configuration_of(Cell("baseline", None, None, 1)) == "baseline"
    assert np.isnan(judge({"a": math.nan}, 2, 1, 20)[0].metric)


def test_the_planned_steps_are_those_the_rule_trains_and_the_papers_grid_costs_a_quarter():
    from repa_mdlm.analysis.halving import planned_steps

    final = {f"L{i}": 400.0 + i for i in range(1, 10)}
    curves = _curves(final, seeds=(0, 1))
    decisions = simulate(curves, eta=3, at_steps=[20, 60, 120])
    assert planned_steps(9, 2, 2, [20, 60, 120], 3) == training_steps(list(curves), decisions, 120)
    # the paper: 120 configurations, one seed, rungs at steps 500 and 1500 of 5 000, and the baseline
    assert planned_steps(120, 1, 1, [500, 1500, 5000], 3) == 120 * 500 + 40 * 1000 + 14 * 3500 + 5000


def test_plan_cost_prints_the_full_grid_and_halving_in_steps_and_gpu_hours(capsys):
    from repa_mdlm.workflow import cli

    from .conftest import REPO

    assert cli.main(["plan-cost", "--configfile", str(REPO / "config.yaml")]) in (0, None)
    out = capsys.readouterr().out
    assert "121 cells (120 configurations x 1 seed(s), 1 baseline), 5000 steps each" in out
    assert "605,000 steps" in out and "210.1 GPU-hours" in out
    assert "154,000 steps" in out and "(25.5 %; eta 3, rungs at steps [500, 1500, 5000]" in out


def _records(curves: dict, step: int, folder, cells=None) -> list[str]:
    from repa_mdlm.io import atomic_write_checked_json

    paths = []
    for name, curve in curves.items():
        if Cell.parse(name).is_baseline or (cells is not None and name not in cells):
            continue
        path = folder / name / f"step{step}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_checked_json(path, {"cell": name, "step": step, "val_ppl": curve[step], "val_nelbo": 0.0,
                                         "val_curve": [[step, curve[step]]]})
        paths.append(str(path))
    return paths


def test_the_rungs_judged_from_records_decide_what_the_simulation_decides_and_report_it(tmp_path):
    """The judge of a real halving run (its rung records) and the simulation (the logs) share one rule:
    same means, ranks and decisions; then the report counts the stopped and Table 1's note says so."""
    from repa_mdlm.analysis.halving import judge_rung_main, kept_configurations, stopped_cells
    from repa_mdlm.reporting.halving_report import halving_report_main, table1_note

    final = {f"L{i}": 400.0 + i for i in range(1, 8)}
    early = {("L7", 0): 300.0, ("L7", 1): 1000.1, ("L3", 0): 470.1, ("L3", 1): 452.3}  # means not on a float grid
    curves = _curves(final, seeds=(0, 1), early=early)
    simulated = simulate(curves, eta=3, at_steps=[20, 60, 120])
    running, tables = None, []
    for rung, step in ((1, 20), (2, 60)):
        out = tmp_path / "tables" / f"rung{rung}.csv"
        judge_rung_main(_records(curves, step, tmp_path / "runs", running), rung, 3, str(out))
        expected = {d.configuration: (d.metric, d.rank, d.kept) for d in simulated if d.rung == rung}
        rows = list(csv.DictReader(out.open()))
        assert {r["configuration"]: (float(r["metric"]), int(r["rank"]), r["decision"] == "kept") for r in rows} \
            == expected
        assert len(rows) == 2 * len(expected)  # one row per cell: both seeds of each configuration
        kept = kept_configurations(str(out))
        running = {name for name in curves if configuration_of(Cell.parse(name)) in kept}
        assert {c for c, _ in stopped_cells(str(out))} == {r["cell"] for r in rows if r["decision"] == "stopped"}
        tables.append(str(out))
    halving_report_main(tables, tmp_path / "tables", steps=120, baselines=2, eta=3)
    md = (tmp_path / "tables" / "halving.md").read_text()
    # 7 configurations x 2 seeds: ceil(7 / 3) = 3 go on from step 20, ceil(3 / 3) = 1 from step 60
    assert "1 of 7 configurations reached the end" in md and "4 at rung 1 (step 20), 2 at rung 2 (step 60)" in md
    assert f"training steps: {2 * 120 + 2 * 120 + 2 * 2 * 60 + 4 * 2 * 20} of the full grid's {16 * 120}" in md
    assert "1 of 7 REPA configurations reached the end" in table1_note(str(tmp_path / "tables" / "halving.csv"))
    with pytest.raises(Exception, match="not at one step"):
        judge_rung_main(_records(curves, 20, tmp_path / "a", {"t_L1_w0.50_s0"})
                        + _records(curves, 60, tmp_path / "b", {"t_L2_w0.50_s0"}), 1, 3, str(tmp_path / "x.csv"))
