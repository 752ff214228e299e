"""What a sweep's results folder says about itself, and what Snakemake then does (issue 25, items 6-9):
a re-train killed after Snakemake removed the old model is repaired by a plain run; a deleted
metrics.json is made again; a changed config re-trains from any working directory, as `status` says;
a trainer left running by a killed Snakemake blocks `--unlock` and every run, and `status` checks that
a trainer lives instead of trusting its heartbeat."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from repa_mdlm.config.loading import load_config
from repa_mdlm.workflow.status import sweep_status

from .conftest import REPO
from .test_workflow import job_counts, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# the demo, cut to two cells of a few steps (a built teacher, a judge of 10 steps)
TINY = {
    "seq_len": 32,
    "corpus": {"train_tokens": 8192, "val_tokens": 2048, "test_tokens": 2048, "tokenizer_training_documents": 300},
    "tokenizer": {"train_vocab_size": 512},
    "student": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2},
    "train": {"steps": 20, "global_batch": 8, "micro_batch": 8, "warmup_steps": 2, "optimizer": "adamw",
              "log_every": 5, "val_every": 10, "val_sequences": 16, "checkpoint_every": 10},
    "repa": {"layers": [2], "weights": [0.5], "variants": [], "teachers": [{
        "name": "tiny-qwen3", "name_or_path": "{results_dir}/teachers/tiny-qwen3/model",
        "init_from_config": {"model_type": "qwen3", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}}]},
    "evaluate": {"t_draws": 2, "batch_size": 32, "sequences": 16, "extra_test_sets": []},
    "generative": {"samples": 4, "steps": 8, "batch_size": 4, "judge": {"name_or_path": None, "train_steps": 10,
                                                                       "train_batch": 8}},
}
CELL = "baseline_s0"


def _overlay(path: Path, results: Path, **train) -> Path:
    raw = {**TINY, "results_dir": str(results), "train": {**TINY["train"], **train}}
    path.write_text(yaml.safe_dump(raw))
    return path


def _sweep(workdir: Path, overlay: Path, *args, check=True):
    """The demo profile on the overlay, run from `workdir` (its .snakemake/ holds that directory's metadata)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return snakemake("-s", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "demo"), "--configfile",
                     str(REPO / "config" / "demo.yaml"), str(overlay), "--cores", "1", *args, cwd=workdir, check=check)


def _planned(proc) -> dict[str, int]:
    """Jobs of a dry run by rule ({} for "Nothing to be done")."""
    return job_counts(proc.stdout) if "Job stats:" in proc.stdout else {}


def _status(results: Path, overlay: Path) -> dict:
    def merge(a, b):
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}

    merged = overlay.with_suffix(".merged.yaml")
    merged.write_text(yaml.safe_dump(merge(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()),
                                           yaml.safe_load(overlay.read_text()))))
    return {r.cell.name: r for r in sweep_status(load_config(merged, base_dir=REPO))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny sweep and its working directory, kept pristine for each test to start from (at the
    same path, since Snakemake's metadata in the working directory names the files by path)."""
    root = tmp_path_factory.mktemp("sweep")
    overlay = _overlay(root / "tiny.yaml", root / "results")
    _sweep(root / "work", overlay)
    for name in ("results", "work"):
        shutil.copytree(root / name, root / f"pristine-{name}", symlinks=True)
    return root, overlay


@pytest.fixture
def sweep(finished):
    root, overlay = finished
    for name in ("results", "work"):
        shutil.rmtree(root / name)
        shutil.copytree(root / f"pristine-{name}", root / name, symlinks=True)
    assert "Nothing to be done" in _sweep(root / "work", overlay, "-n").stdout
    return root / "results", overlay, root / "work"


def test_a_retrain_killed_after_snakemake_removed_the_model_is_repaired_by_a_plain_run(sweep):
    results, overlay, work = sweep
    run = results / "runs" / CELL
    # what a kill during `--forcerun train` leaves: Snakemake removed the train job's outputs, the old
    # evaluation and samples stayed, and the killed trainer's heartbeat (a dead pid of this host) and checkpoint
    for name in ("model", "train_log.jsonl", "train_summary.json", "config.yaml"):
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "progress.json").write_text(json.dumps({"step": 10, "steps": 20, "time": time.time(),
                                                   "host": socket.gethostname(), "pid": int(dead.stdout)}))
    row = _status(results, overlay)[CELL]
    assert row.state == "outdated" and "Snakemake re-runs it" in row.detail, row  # was "running ... ETA"
    for args in ((), ("--rerun-incomplete",)):
        counts = _planned(_sweep(work, overlay, "-n", "--quiet", "rules", *args))
        assert (counts.get("train"), counts.get("evaluate"), counts.get("generative")) == (1, 1, 1), (args, counts)
    _sweep(work, overlay)
    assert (run / "model").is_dir() and _status(results, overlay)[CELL].state == "done"
    assert "Nothing to be done" in _sweep(work, overlay, "-n").stdout


def test_a_deleted_metrics_json_is_made_again_by_the_next_sweep(sweep):
    results, overlay, work = sweep
    (results / "runs" / CELL / "metrics.json").unlink()
    counts = _planned(_sweep(work, overlay, "-n", "--quiet", "rules"))
    assert counts.get("evaluate") == 1 and "train" not in counts, counts
    _sweep(work, overlay)
    assert (results / "runs" / CELL / "metrics.json").exists()


def test_a_changed_lr_retrains_from_another_working_directory_as_status_says(sweep, tmp_path):
    results, overlay, work = sweep
    changed = _overlay(tmp_path / "lr.yaml", results, lr=1.0e-3)
    assert {r.state for r in _status(results, changed).values()} == {"outdated"}
    out = _sweep(tmp_path / "elsewhere", changed, "-n", "--quiet", "rules")
    assert _planned(out).get("train") == 2, out.stdout + out.stderr
    # the config restored (a dry run changed nothing): nothing to do, from either directory
    assert {r.state for r in _status(results, overlay).values()} == {"done"}
    for where in (work, tmp_path / "elsewhere"):
        assert "Nothing to be done" in _sweep(where, overlay, "-n").stdout, where
    _sweep(tmp_path / "elsewhere", changed)
    assert {r.state for r in _status(results, changed).values()} == {"done"}
    assert "Nothing to be done" in _sweep(tmp_path / "elsewhere", changed, "-n").stdout
    # back in the first directory with the first config: its records (params, the manifest's checksum)
    # match what it ran, yet the folder now holds the other lr's models; it re-trains them, as status says
    assert {r.state for r in _status(results, overlay).values()} == {"outdated"}
    out = _sweep(work, overlay, "-n", "--quiet", "rules")
    assert _planned(out).get("train") == 2, out.stdout + out.stderr
    out = _sweep(work, overlay, "-n", str(results / "runs" / CELL / "metrics.json"), "--quiet", "rules")
    assert _planned(out).get("train") == 1, out.stdout + out.stderr  # a one-cell target re-trains that cell alone


def test_a_sweep_moved_to_another_folder_plans_nothing_and_is_done(finished, tmp_path):
    """Its built teacher's folder moves with it: the cells, checkpoints and feature caches still vouch for
    the results (a moved sweep once re-trained every REPA cell, and its jobs refused their feature caches)."""
    root, _ = finished
    moved = tmp_path / "moved"
    shutil.copytree(root / "pristine-results", moved, symlinks=True)
    overlay = _overlay(tmp_path / "moved.yaml", moved)
    assert {r.state for r in _status(moved, overlay).values()} == {"done"}
    out = _sweep(tmp_path / "work", overlay, "-n")
    assert "Nothing to be done" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    # a feature job forced again in the moved folder: the REPA cell's training reads the other split's cache
    out = _sweep(tmp_path / "work", overlay, "--forcerun", str(moved / "teachers" / "tiny-qwen3" / "features" / "val.npy"),
                 check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert {r.state for r in _status(moved, overlay).values()} == {"done"}


def _hold_run_lock(run: Path) -> subprocess.Popen:
    """A process holding the trainer's own lock on the run folder (training.trainer._RunLock), as a trainer does."""
    code = ("import sys, time; from pathlib import Path; from repa_mdlm.training.trainer import _RunLock\n"
            "with _RunLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_unlock_and_rerun_are_refused_while_a_killed_snakemakes_trainer_lives(sweep):
    results, overlay, work = sweep
    run = results / "runs" / CELL
    def files():  # but the lock file, which the stand-in trainer opens
        return {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}

    before = files()
    # a Snakemake killed mid-sweep: its writer record names a dead process, its trainer still runs
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (results / ".snakemake-writer.json").write_text(json.dumps({
        "pid": int(dead.stdout), "host": socket.gethostname(), "started": "then", "command": "snakemake",
        "workdir": str(work)}))
    trainer = _hold_run_lock(run)
    try:
        for args in (("--unlock",), ("--rerun-incomplete",), ("--forcerun", "train")):
            out = _sweep(work, overlay, *args, check=False)
            text = out.stdout + out.stderr
            assert out.returncode != 0 and "a trainer still runs" in text and f"kill -TERM {trainer.pid}" in text, args
            assert "Traceback" not in text, text
        # --nolock skips the results lock, but never plans a second trainer of that cell
        out = _sweep(work, overlay, "--nolock", "--forcerun", "train", check=False)
        assert out.returncode != 0 and f"pid {trainer.pid}" in out.stdout + out.stderr
    finally:
        trainer.kill()
        trainer.wait()
    assert files() == before  # nothing lost or touched
    out = _sweep(work, overlay, "--unlock")  # the trainer gone, the unlock goes through
    assert "Unlocked" in out.stdout + out.stderr


def test_a_trainer_still_starting_counts_as_live(tmp_path):
    """Before it takes its lock (its imports take seconds), a trainer is known by its command line."""
    from repa_mdlm.workflow.results_lock import live_trainers

    run = tmp_path / "runs" / CELL
    run.mkdir(parents=True)
    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "repa-mdlm", "train",
                                 "--run-dir", str(run)], cwd=tmp_path)
    try:
        time.sleep(0.2)
        assert live_trainers(tmp_path)[CELL]["pid"] == starting.pid
    finally:
        starting.kill()
        starting.wait()
    assert live_trainers(tmp_path) == {}


def test_status_says_running_only_while_the_trainer_of_this_host_lives(tmp_path):
    cfg = load_config(REPO / "config" / "demo.yaml", overrides={"results_dir": str(tmp_path)})
    run = tmp_path / "runs" / CELL
    run.mkdir(parents=True)
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.json").write_text(json.dumps({"step": 40}))
    (run / "progress.json").write_text(json.dumps({"step": 40, "steps": 120, "time": time.time(),
                                                   "host": socket.gethostname(), "pid": os.getpid() + 10**6}))
    row = {r.cell.name: r for r in sweep_status(cfg)}[CELL]
    assert row.state == "preempted" and "no trainer runs it" in row.detail, row
    trainer = _hold_run_lock(run)
    try:
        assert {r.cell.name: r for r in sweep_status(cfg)}[CELL].state == "running"
    finally:
        trainer.kill()
        trainer.wait()
