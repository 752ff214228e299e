"""Refactors change no result: every job spec of the three configs (what Snakemake's params compare,
so a changed spec re-runs a finished job) and every Table 1 file made from fixed metrics stay
byte-identical to the files in tests/reference/. Regenerate after an intended change:
`python -m tests.test_pins` (and say why in the commit)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd

REFERENCE = Path(__file__).parent / "reference"
SPECS = REFERENCE / "job_specs.json"
TABLES = REFERENCE / "table1"
CONFIGS = ("config.yaml", "config/demo.yaml", "config/study.yaml")
REPO = Path(__file__).resolve().parents[1]


def job_specs() -> dict[str, dict[str, str]]:
    from repa_mdlm.config.loading import load_config
    from repa_mdlm.config.specs import cell_spec, data_spec, teacher_spec
    from repa_mdlm.workflow.snakemake_plan import feature_caches

    def digest(spec) -> str:  # the string the rules pass as params.spec (workflow/snakemake_plan.as_json)
        return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()

    pins = {}
    for name in CONFIGS:
        cfg = load_config(REPO / name, overrides={"results_dir": "results/pinned"}, base_dir=REPO)
        jobs = {"data": digest(data_spec(cfg))}
        jobs.update({f"teacher:{t.name}": digest(teacher_spec(cfg, t.name)) for t in cfg.repa.teachers})
        jobs.update({f"teacher:{t}:{alignment}": digest(teacher_spec(cfg, t, alignment))
                     for t, alignment in feature_caches(cfg) if alignment != "pooled"})
        jobs.update({f"cell:{c.name}": digest(cell_spec(cfg, c)) for c in cfg.cells()})
        pins[name] = jobs
    return pins


def _metrics(teacher, seed, ppl, wall, layer=None, weight=None):
    cell = f"baseline_s{seed}" if teacher == "baseline" else f"{teacher}_L{layer}_w{weight:.2f}_s{seed}"
    return {"cell": cell, "teacher": teacher, "layer": layer, "weight": weight, "seed": seed,
            "test_nelbo": math.log(ppl), "test_nelbo_se": 0.004 + 0.001 * seed, "test_nelbo_mc_se": 0.002,
            "test_ppl": ppl, "test_ppl_ci95": [ppl * 0.985, ppl * 1.015], "test_tokens": 4096, "t_draws": 4,
            "train_wall_s": wall, "train_tokens_per_s": 1.0e5 * 1000.0 / wall, "steps": 120,
            "step_seconds": wall, "step_seconds_median": wall / 120, "startup_seconds": 12.5,  # as training/trainer.py writes
            "validation_seconds": 8.25, "checkpoint_seconds": 4.25, "timings_from_step": 0,
            "teacher_features": None if teacher == "baseline" else "cached", "device": "cpu"}


def table_inputs(folder: Path) -> list[str]:
    """A small grid with seed noise: baseline and two teachers x two layers x two weights x three seeds,
    plus the teachers' feature manifests (the amortised table's cache cost)."""
    rows = []
    for seed in range(3):
        rows.append(_metrics("baseline", seed, 100.0 + 3.0 * seed - 2.0 * (seed == 2), 1000.0 + 10 * seed))
        for t, (teacher, gain) in enumerate((("ta", 0.12), ("tb", 0.05))):
            for layer in (2, 3):
                for weight in (0.5, 1.0):
                    ppl = 100.0 * (1 - gain * weight / layer * 2) + 1.7 * ((seed * 7 + layer + t) % 3)
                    rows.append(_metrics(teacher, seed, round(ppl, 6), 1080.0 + 40 * t + 15 * seed + 7 * layer,
                                         layer, weight))
    paths = []
    for m in rows:
        path = folder / "runs" / m["cell"] / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(m))
        paths.append(str(path))
    for teacher, wall in (("ta", 61.5), ("tb", 140.25)):
        for split in ("train", "val"):
            path = folder / "teachers" / teacher / "features" / f"{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"teacher": teacher, "wall_s": wall / (1 if split == "train" else 10)}))
    return paths


def make_tables(folder: Path) -> Path:
    from repa_mdlm.workflow.cli import main

    paths = table_inputs(folder)
    features = sorted(str(p) for p in folder.glob("teachers/*/features/*.json"))
    assert main(["aggregate", "--metrics", *paths, "--features", *features, "--out-dir", str(folder / "tables")]) == 0
    return folder / "tables"


def test_every_job_spec_of_the_three_configs_is_unchanged():
    pinned = json.loads(SPECS.read_text())
    current = job_specs()
    for name in CONFIGS:
        changed = sorted(job for job in pinned[name].keys() | current[name].keys()
                         if pinned[name].get(job) != current[name].get(job))
        assert not changed, f"{name}: these jobs' specs changed, so Snakemake would re-run them: {changed[:8]}"


def test_every_job_accepts_the_spec_it_is_given():
    """What a job does with --spec: Config.from_dict(spec, job_spec=True), which must not refuse it."""
    from repa_mdlm.config import Config
    from repa_mdlm.config.loading import load_config
    from repa_mdlm.config.specs import (
            cell_spec,
            data_spec,
            generative_spec,
            judge_spec,
            teacher_spec,
            zero_shot_data_spec,
            zero_shot_spec,
        )

    for name in CONFIGS:
        cfg = load_config(REPO / name, overrides={"results_dir": "results/pinned"}, base_dir=REPO)
        specs = [data_spec(cfg), judge_spec(cfg), generative_spec(cfg), zero_shot_spec(cfg),
                 *(teacher_spec(cfg, t.name) for t in cfg.repa.teachers), cell_spec(cfg, cfg.cells()[-1]),
                 *(zero_shot_data_spec(cfg, s.name) for s in cfg.evaluate.zero_shot_sets(REPO))]
        for spec in specs:
            Config.from_dict(json.loads(json.dumps(spec)), base_dir=REPO, job_spec=True)


def test_table1_from_fixed_metrics_is_byte_identical(tmp_path):
    made = make_tables(tmp_path)
    names = sorted(p.name for p in TABLES.iterdir())
    assert names == sorted(p.name for p in made.iterdir())
    for name in names:
        if name.endswith(".parquet"):  # the file embeds library versions: compare the table
            pd.testing.assert_frame_equal(pd.read_parquet(made / name), pd.read_parquet(TABLES / name))
        else:
            assert (made / name).read_bytes() == (TABLES / name).read_bytes(), name


if __name__ == "__main__":  # regenerate the references
    SPECS.write_text(json.dumps(job_specs(), indent=1, sort_keys=True) + "\n")
    shutil.rmtree(TABLES, ignore_errors=True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(make_tables(Path(tmp)), TABLES)
    print(f"wrote {SPECS} and {TABLES}", file=sys.stderr)
