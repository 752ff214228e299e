"""Real signals to a real training process: SIGTERM (Slurm preemption / time limit) and
kill -9 at a random step. Re-running resumes and ends bit-identical to an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repa_mdlm.config import Cell
from repa_mdlm.config.specs import cell_spec
from repa_mdlm.training.trainer import EXIT_PREEMPTED

from ..conftest import tiny_config

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CELL = Cell("minilm", 2, 0.5, 0)


def _cmd(cfg, data_dir, features, run_dir):
    return [sys.executable, "-m", "repa_mdlm", "train", "--spec", json.dumps(cell_spec(cfg, CELL)), "--cell",
            CELL.name, "--data", str(data_dir), "--run-dir", str(run_dir), "--features", str(features),
            "--threads", "1"]


def _wait_for_step(run_dir, proc, step, timeout=120):
    log = Path(run_dir) / "train_log.partial.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "training ended before the signal"
        if log.exists():
            rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            if rows and rows[-1]["step"] >= step:
                return rows[-1]["step"]
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def _final(run_dir):
    from safetensors.torch import load_file

    rows = [json.loads(x) for x in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]
    math = [{k: r.get(k) for k in ("step", "loss", "nelbo", "repa", "val_nelbo")} for r in rows]
    return math, load_file(str(Path(run_dir) / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(data_dir, repa_features, tmp_path_factory):
    cfg = tiny_config(train={"steps": 60, "log_every": 1, "val_every": 20, "checkpoint_every": 7})
    run_dir = tmp_path_factory.mktemp("full")
    subprocess.run(_cmd(cfg, data_dir, repa_features, run_dir), check=True, capture_output=True)
    return cfg, _final(run_dir)


def _assert_same(run_dir, reference):
    import torch

    rows, weights = _final(run_dir)
    ref_rows, ref_weights = reference
    assert rows == ref_rows  # every logged step once, identical values
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)


def test_sigterm_checkpoints_exits_75_and_resumes_identically(uninterrupted, data_dir, repa_features, tmp_path):
    cfg, reference = uninterrupted
    proc = subprocess.Popen(_cmd(cfg, data_dir, repa_features, tmp_path), stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path, proc, 10)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert 10 <= state["step"] < 60 and "checkpoint saved" in err
    resumed = subprocess.run(_cmd(cfg, data_dir, repa_features, tmp_path), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {state['step']}" in resumed.stderr
    _assert_same(tmp_path, reference)


def test_kill_9_at_a_random_step_loses_only_uncheckpointed_steps(uninterrupted, data_dir, repa_features, tmp_path):
    cfg, reference = uninterrupted
    kill_at = random.Random(os.getpid()).randint(8, 40)
    proc = subprocess.Popen(_cmd(cfg, data_dir, repa_features, tmp_path), stderr=subprocess.DEVNULL)
    reached = _wait_for_step(tmp_path, proc, kill_at)
    proc.kill()
    proc.wait()
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert reached - 7 <= state["step"] <= reached + 7  # checkpoint_every = 7
    resumed = subprocess.run(_cmd(cfg, data_dir, repa_features, tmp_path), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same(tmp_path, reference)
