"""`repa-mdlm status`: one line per cell with its state, step and result."""

import json
import time

from repa_mdlm.config.loading import load_config
from repa_mdlm.workflow.cli import main
from repa_mdlm.workflow.status import format_table, sweep_status

from .conftest import REPO


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_states_of_a_sweep(tmp_path, capsys):
    cfg = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    runs = tmp_path / "runs"
    _write(runs / "baseline_s0" / "train_summary.json", json.dumps({"steps": 120}))
    for name in ("model/model.safetensors", "train_log.jsonl", "config.yaml"):  # the train job's other outputs
        _write(runs / "baseline_s0" / name, "")
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
    assert "1 done, 1 running, 1 failed, 2 preempted, 5 not started (10 cells)" in table
    assert main(["status", "--configfile", str(REPO / "config" / "demo.yaml"), "--results-dir", str(tmp_path),
                 "--state", "failed", "--targets"]) == 0
    assert capsys.readouterr().out.split() == [f"{tmp_path}/runs/minilm_L3_w0.50_s0/metrics.json"]


def test_running_cell_shows_tokens_per_second_and_eta(tmp_path):
    from repa_mdlm.workflow.status import format_duration

    cfg = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    run = tmp_path / "runs" / "baseline_s0"
    tokens_per_step = cfg.train.global_batch * cfg.seq_len
    _write(run / "progress.json", json.dumps({"step": 40, "steps": 120, "time": time.time(), "host": "gpu07", "pid": 1}))
    # steps 20 -> 40 took 10 s of training: 0.5 s a step, 80 steps left -> 40 s
    _write(run / "train_log.partial.jsonl", "".join(json.dumps(r) + "\n" for r in (
        {"step": 0, "val_ppl": 500.0}, {"step": 20, "loss": 5.0, "tokens_per_s": 1.0, "elapsed_s": 30.0},
        {"step": 30, "val_ppl": 300.0}, {"step": 40, "loss": 4.0, "tokens_per_s": 1.0, "elapsed_s": 40.0})) + '{"step": 4')
    row = {r.cell.name: r for r in sweep_status(cfg)}["baseline_s0"]
    assert row.state == "running" and row.step == 40
    assert abs(row.eta_s - 40.0) < 1e-9 and abs(row.tokens_per_s - tokens_per_step / 0.5) < 1e-6
    assert f"{tokens_per_step / 0.5:,.0f} tok/s, ETA 40s" in format_table([row])
    # one timed row: the average since step 0
    _write(run / "train_log.partial.jsonl", json.dumps({"step": 40, "elapsed_s": 80.0}) + "\n")
    row = {r.cell.name: r for r in sweep_status(cfg)}["baseline_s0"]
    assert abs(row.eta_s - 160.0) < 1e-9
    # no log yet: the step alone
    (run / "train_log.partial.jsonl").unlink()
    row = {r.cell.name: r for r in sweep_status(cfg)}["baseline_s0"]
    assert row.eta_s is None and row.detail == "on gpu07"
    assert (format_duration(59), format_duration(61), format_duration(3725)) == ("59s", "1m01s", "1h02m")


def test_a_halving_sweep_shows_each_cells_rung_and_the_stopped_ones(tmp_path, capsys):
    """Rungs at steps 20 and 60 (config/demo.yaml with config/halving-on.yaml): a cell kept at rung 1,
    one stopped there, one failed in its rung job."""
    cfg = load_config([REPO / "config" / "demo.yaml", REPO / "config" / "halving-on.yaml"],
                      overrides={"results_dir": str(tmp_path)})
    runs = tmp_path / "runs"
    for cell in ("minilm_L2_w0.50_s0", "minilm_L2_w1.00_s0"):
        _write(runs / cell / "halving" / "step20.json", "{}")
        _write(runs / cell / "checkpoint" / "state.json", json.dumps({"step": 20}))
    _write(tmp_path / "tables" / "halving" / "rung1.csv",
           "cell,configuration,rung,step,val_ppl,metric,rank,decision,why\n"
           "minilm_L2_w0.50_s0,minilm_L2_w0.50,1,20,400.0,400.0,1,kept,\"rank 1 of 2, within the best 1\"\n"
           "minilm_L2_w1.00_s0,minilm_L2_w1.00,1,20,500.0,500.0,2,stopped,\"rank 2 of 2, outside the best 1\"\n")
    _write(tmp_path / "logs" / "train_rung" / "minilm_L3_w0.50_s0_step20.log",
           "Traceback (most recent call last):\nRuntimeError: out of memory\n")
    states = {r.cell.name: r for r in sweep_status(cfg)}
    kept, stopped = states["minilm_L2_w0.50_s0"], states["minilm_L2_w1.00_s0"]
    assert (kept.state, kept.step, kept.rung) == ("kept", 20, "1/2") and "trains it to rung 2" in kept.detail
    assert (stopped.state, stopped.step, stopped.rung) == ("stopped", 20, "stopped at 1/2")
    assert "outside the best 1" in stopped.detail
    assert states["minilm_L3_w0.50_s0"].state == "failed" and "out of memory" in states["minilm_L3_w0.50_s0"].detail
    assert states["baseline_s0"].rung == "not judged" and states["tiny-qwen3_L2_w0.50_s0"].rung == "0/2"
    assert "stopped at 1/2" in format_table(list(states.values()))
    assert main(["status", "--configfile", str(REPO / "config" / "demo.yaml"), str(REPO / "config" / "halving-on.yaml"),
                 "--results-dir", str(tmp_path), "--state", "stopped", "--targets"]) == 0
    assert capsys.readouterr().out.split() == [f"{tmp_path}/runs/minilm_L2_w1.00_s0/metrics.json"]
    # without halving (the config alone), the same folder is a full grid: the cells are not stopped
    plain = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    assert {r.state for r in sweep_status(plain)} >= {"preempted"} and "stopped" not in {r.state for r in sweep_status(plain)}
