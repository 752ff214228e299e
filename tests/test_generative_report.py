"""The generative table and figures from cells' generative.json, and the workflow's plan for them."""

from __future__ import annotations

import pandas as pd
import pytest

from repa_mdlm.analysis.beyond import collect_generative
from repa_mdlm.io import atomic_write_checked_json
from repa_mdlm.layout import GENERATIVE_FIGURES, GENERATIVE_TABLE_FILES
from repa_mdlm.reporting.generative_report import generative_report_main, generative_table

from .test_workflow import job_counts, snakemake


def _cell(teacher, seed, gen_ppl, entropy, layer=None, weight=None, flags=()):
    name = f"baseline_s{seed}" if teacher == "baseline" else f"{teacher}_L{layer}_w{weight:.2f}_s{seed}"
    return {"cell": name, "teacher": teacher, "layer": layer, "weight": weight, "seed": seed,
            "gen_ppl": gen_ppl, "gen_ppl_se": 1.0, "entropy": entropy, "entropy_se": 0.05,
            "data_gen_ppl": 50.0, "data_entropy": 4.0, "network_calls_per_sample": 120.0,
            "sampler_s_per_sample": 0.2, "samples": 32, "steps": 128, "seq_len": 128,
            "judge": "trained judge (...)", "judge_trained_on_train_split": True, "flags": list(flags),
            "texts": ["um texto"]}


@pytest.fixture
def cells(tmp_path):
    rows = [_cell("baseline", 0, 100.0, 3.9), _cell("baseline", 1, 110.0, 3.8),
            _cell("ta", 0, 80.0, 3.9, 2, 0.5), _cell("ta", 1, 90.0, 3.7, 2, 0.5),
            _cell("tb", 0, 20.0, 1.0, 2, 0.5, flags=["degenerate: ..."]), _cell("tb", 1, 25.0, 1.2, 2, 0.5)]
    paths = []
    for row in rows:
        path = tmp_path / "runs" / row["cell"] / "generative.json"
        path.parent.mkdir(parents=True)
        atomic_write_checked_json(path, row)
        paths.append(str(path))
    runs = pd.DataFrame({"cell": [r["cell"] for r in rows], "test_ppl": [60.0, 62.0, 55.0, 57.0, 70.0, 71.0]})
    runs_path = tmp_path / "runs.parquet"
    runs.to_parquet(runs_path)
    return paths, runs_path


def test_the_table_averages_per_teacher_against_the_baseline_and_counts_flags(cells):
    paths, runs_path = cells
    t = generative_table(collect_generative(paths, pd.read_parquet(runs_path))).set_index("teacher")
    assert t.loc["baseline", "gen_ppl_mean"] == pytest.approx(105.0)
    assert t.loc["ta", "gen_ppl_mean"] == pytest.approx(85.0)
    assert t.loc["ta", "gen_ppl_change_pct"] == pytest.approx(100 * (85 - 105) / 105)
    assert t.loc["tb", "flagged_cells"] == 1 and t.loc["ta", "flagged_cells"] == 0


def test_the_report_writes_every_declared_file_and_says_what_the_judge_measures(cells, tmp_path):
    paths, runs_path = cells
    written = generative_report_main(paths, str(runs_path), tmp_path / "tables", tmp_path / "figures")
    assert sorted(p.name for p in written) == sorted(
        [*GENERATIVE_TABLE_FILES, *(f"{f.stem}.{ext}" for f in GENERATIVE_FIGURES for ext in ("png", "pdf"))])
    md = (tmp_path / "tables" / "generative.md").read_text()
    assert "measures fit to that data, not general fluency" in md and "| tb | 2 |" in md


@pytest.mark.workflow
def test_the_demo_plans_one_generative_job_per_cell_and_none_when_off(tmp_path):
    # the config file lies beside the results folder: a folder holding other files is no sweep's
    args = ("--profile", "profiles/demo", "--config", f"results_dir={tmp_path / 'results'}", "-n", "--nolock",
            "--quiet", "rules")
    counts = job_counts(snakemake(*args).stdout)
    assert counts["generative"] == counts["train"] and counts["train_judge"] == 1
    assert counts["generative_report"] == 1
    import yaml

    from .conftest import REPO

    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["generative"]["samples"] = 0
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(raw))
    off = job_counts(snakemake(*args, "--configfile", str(tmp_path / "off.yaml")).stdout)
    assert "generative" not in off and "train_judge" not in off and off["train"] == counts["train"]
