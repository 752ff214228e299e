"""`repa-mdlm status`: one line per cell with its state, step and result."""

import json
import time

from repa_mdlm.cli import main
from repa_mdlm.config_loading import load_config
from repa_mdlm.status import format_table, sweep_status

from .conftest import REPO


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_states_of_a_sweep(tmp_path, capsys):
    cfg = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    runs = tmp_path / "runs"
    _write(runs / "baseline_s0" / "train_summary.json", json.dumps({"steps": 120}))
    _write(runs / "baseline_s0" / "metrics.json", json.dumps({"steps": 120, "test_ppl": 440.0, "test_nelbo_se": 0.01}))
    _write(runs / "minilm_L2_w0.50_s0" / "progress.json",
           json.dumps({"step": 57, "steps": 120, "time": time.time(), "host": "gpu07", "pid": 1}))
    _write(runs / "minilm_L2_w1.00_s0" / "checkpoint" / "state.json", json.dumps({"step": 80}))
    _write(tmp_path / "logs" / "train" / "minilm_L3_w0.50_s0.log", "step 3\nTraceback (most recent call last):\n"
           "FloatingPointError: non-finite loss at step 4\n")
    _write(runs / "minilm_L3_w1.00_s0" / "progress.json",  # a dead job's old heartbeat
           json.dumps({"step": 10, "steps": 120, "time": time.time() - 3600, "host": "gpu01", "pid": 1}))
    _write(runs / "minilm_L3_w1.00_s0" / "checkpoint" / "state.json", json.dumps({"step": 10}))
    states = {r.cell.name: r for r in sweep_status(cfg)}
    assert states["baseline_s0"].state == "done" and abs(states["baseline_s0"].test_ppl_se - 4.4) < 1e-9
    assert (states["minilm_L2_w0.50_s0"].state, states["minilm_L2_w0.50_s0"].step) == ("running", 57)
    assert (states["minilm_L2_w1.00_s0"].state, states["minilm_L2_w1.00_s0"].step) == ("preempted", 80)
    assert states["minilm_L3_w0.50_s0"].state == "failed" and "non-finite" in states["minilm_L3_w0.50_s0"].detail
    assert states["minilm_L3_w1.00_s0"].state == "preempted"
    assert states["tiny-qwen3_L2_w0.50_s0"].state == "not started"
    table = format_table(list(states.values()))
    assert "1 done, 1 running, 1 failed, 2 preempted, 4 not started (9 cells)" in table
    assert main(["status", "--configfile", str(REPO / "config" / "demo.yaml"), "--results-dir", str(tmp_path),
                 "--state", "failed", "--targets"]) == 0
    assert capsys.readouterr().out.split() == [f"{tmp_path}/runs/minilm_L3_w0.50_s0/metrics.json"]
