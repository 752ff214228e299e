"""`repa-mdlm status` reports the latest attempt against the current config: a cell whose re-run
failed is failed, not done with its old PPL; a cell trained with another config is outdated."""

import json
import os

import pytest
import yaml

from repa_mdlm.config.loading import load_config
from repa_mdlm.workflow.cli import main
from repa_mdlm.workflow.status import sweep_status

from ..conftest import REPO

pytestmark = pytest.mark.faults
CELL = "minilm_L2_w0.50_s0"


def _finished_cell(cfg, run):
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"cell": CELL, **cfg.to_dict()}))
    (run / "train_summary.json").write_text(json.dumps({"steps": 120}))
    (run / "model").mkdir()  # the train job's other outputs: without them the cell is not trained
    (run / "train_log.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    (run / "metrics.json").write_text(json.dumps({"steps": 120, "test_ppl": 440.0, "test_nelbo_se": 0.01}))


def _state(cfg):
    return {r.cell.name: r for r in sweep_status(cfg)}[CELL]


def test_a_failed_rerun_is_failed_not_done(tmp_path, capsys):
    configfile = REPO / "config" / "demo.yaml"
    cfg = load_config(configfile, overrides={"results_dir": str(tmp_path)})
    run = tmp_path / "runs" / CELL
    _finished_cell(cfg, run)
    assert _state(cfg).state == "done"
    # the re-run diverged: Snakemake removed the train job's outputs; the old metrics.json stayed
    for name in ("train_summary.json", "config.yaml"):
        (run / name).unlink()
    log = tmp_path / "logs" / "train" / f"{CELL}.log"
    log.parent.mkdir(parents=True)
    log.write_text("minilm_L2_w0.50_s0:   5%| 6/120\nrepa-mdlm train: error: minilm_L2_w0.50_s0: non-finite loss or "
                   "gradient at step 7 (nelbo=nan, repa=0.4, grad_norm=nan). Stopped; ...\n")
    status = _state(cfg)
    assert status.state == "failed" and "non-finite" in status.detail and status.test_ppl is None
    assert main(["status", "--configfile", str(configfile), "--results-dir", str(tmp_path), "--state", "failed",
                 "--targets"]) == 0
    assert capsys.readouterr().out.split() == [f"{tmp_path}/runs/{CELL}/metrics.json"]


def test_a_cell_trained_with_another_config_is_outdated(tmp_path):
    cfg = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    run = tmp_path / "runs" / CELL
    _finished_cell(cfg, run)
    changed = load_config(REPO / "config" / "demo.yaml",
                          overrides={"results_dir": str(tmp_path), "train": {**cfg.to_dict()["train"], "lr": 1e-2}})
    assert _state(changed).state == "outdated"
    speed_only = load_config(REPO / "config" / "demo.yaml", overrides={
        "results_dir": str(tmp_path), "train": {**cfg.to_dict()["train"], "compile": "blocks"}})
    assert _state(speed_only).state == "done"  # a speed-only setting re-runs nothing


def test_an_evaluation_older_than_its_training_is_not_done(tmp_path):
    cfg = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    run = tmp_path / "runs" / CELL
    _finished_cell(cfg, run)
    later = (run / "metrics.json").stat().st_mtime + 10
    os.utime(run / "train_summary.json", (later, later))  # trained again since it was evaluated
    status = _state(cfg)
    assert status.state == "trained" and "not evaluated again" in status.detail
