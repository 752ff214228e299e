"""Two writers are refused; nothing unsafe is loaded or run."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.faults
SRC = REPO / "src" / "repa_mdlm"


def _snakemake(tmp_path, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--config", f"results_dir={tmp_path}",
            *extra], env


def _wait_for(condition, process, seconds=300):  # generous: a loaded 2-core CI machine
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, f"exited with {process.returncode} before the condition held"
        assert time.time() < deadline, f"not within {seconds} s"
        time.sleep(0.2)


@pytest.mark.slow
def _kill_session(process) -> None:
    """kill -9 of a Snakemake and every job it started (a lost node): nothing cleans up."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_a_second_snakemake_is_told_the_truth_first_and_a_killed_one_the_recovery_in_order(tmp_path):
    from repa_mdlm.layout import WRITER_FILE
    from repa_mdlm.workflow.results_lock import read

    cmd, env = _snakemake(tmp_path)
    popen = dict(cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = subprocess.Popen(cmd, **popen)
    again = None
    try:
        _wait_for(lambda: (tmp_path / WRITER_FILE).exists(), first)  # onstart: the lock is held
        for extra in ([], ["--rerun-incomplete"], ["--unlock"]):
            second = subprocess.run([*cmd, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            out = second.stdout + second.stderr
            assert second.returncode != 0, extra
            assert f"Snakemake pid {first.pid}" in out and f"kill -INT {first.pid}" in out, out
            assert "rerun your command with the --rerun-incomplete flag" not in out
            assert "Unlocked" not in out
        _kill_session(first)  # no onerror: the record and Snakemake's locks stay
        killed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        out = killed.stdout + killed.stderr
        assert killed.returncode != 0 and "was killed without cleaning up" in out, out
        assert out.index("--unlock added") < out.index("--rerun-incomplete added")
        # the advice, followed in order, works
        unlock = subprocess.run([*cmd, "--unlock"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert unlock.returncode == 0 and not (tmp_path / WRITER_FILE).exists(), unlock.stderr
        again = subprocess.Popen([*cmd, "--rerun-incomplete"], **popen)
        # past the incomplete-file check and Snakemake's lock: it records itself as the writer
        _wait_for(lambda: (read(tmp_path) or {}).get("pid") == again.pid, again)
    finally:
        for process in (first, again):
            if process is not None:
                _kill_session(process)


def test_a_writer_releases_only_its_own_record(tmp_path, live_process):
    from repa_mdlm.workflow.results_lock import claim, read, release

    claim(tmp_path)
    assert read(tmp_path)["pid"] == os.getpid()
    release(tmp_path)
    assert read(tmp_path) is None
    _record(tmp_path, live_process.pid)
    release(tmp_path)  # another process's record stays
    assert read(tmp_path)["pid"] == live_process.pid


@pytest.fixture
def live_process():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield sleeper
    sleeper.kill()
    sleeper.wait()


def _record(tmp_path, pid, **changes):
    import json
    import socket

    from repa_mdlm.layout import WRITER_FILE
    from repa_mdlm.workflow.results_lock import _process_start

    record = {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
              "started": "2026-11-30 10:00:00 UTC", "command": "snakemake --profile slurm", "workdir": "/w"}
    record.update(changes)
    (tmp_path / WRITER_FILE).write_text(json.dumps(record))
    return tmp_path / WRITER_FILE


def test_a_live_writer_refuses_a_second_snakemake_at_parse_time(tmp_path, live_process):
    _record(tmp_path, live_process.pid)
    cmd, env = _snakemake(tmp_path, "-n")
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = second.stdout + second.stderr
    assert second.returncode != 0
    assert f"is being written by Snakemake pid {live_process.pid}" in out, out
    assert f"repa-mdlm status --configfile config/demo.yaml --results-dir {tmp_path}" in out
    status = subprocess.run([sys.executable, "-m", "repa_mdlm", "status", "--configfile", "config/demo.yaml",
                             "--results-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert f"written now by Snakemake pid {live_process.pid}" in status.stdout, status.stderr


def test_the_writer_record_tells_live_dead_reused_and_foreign(tmp_path, live_process):
    from repa_mdlm.workflow.results_lock import ResultsLockError, refuse_second_writer

    locks = tmp_path / "locks"
    locks.mkdir()
    _record(tmp_path, live_process.pid)
    with pytest.raises(ResultsLockError, match="--unlock would remove its locks"):
        refuse_second_writer(tmp_path, unlocking=True, lock_dir=locks)
    # the same pid with another start time is a reused pid: the writer is gone
    path = _record(tmp_path, live_process.pid, process_start="1")
    refuse_second_writer(tmp_path, unlocking=False, lock_dir=locks)
    # a dead writer whose locks name this folder: unlock first, then rerun-incomplete
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _record(tmp_path, int(dead.stdout))
    (locks / "0.output.lock").write_text(f"{tmp_path.resolve()}/runs/baseline_s0/metrics.json\n")
    with pytest.raises(ResultsLockError, match="killed without cleaning up"):
        refuse_second_writer(tmp_path, unlocking=False, lock_dir=locks)
    # another folder's locks are not this folder's
    (locks / "0.output.lock").write_text("/elsewhere/runs/baseline_s0/metrics.json\n")
    refuse_second_writer(tmp_path, unlocking=False, lock_dir=locks)
    refuse_second_writer(tmp_path, unlocking=True, lock_dir=locks)
    assert not path.exists()
    # a writer on another host cannot be checked: refused until --unlock says it ended
    _record(tmp_path, 1, host="login-node-7")
    with pytest.raises(ResultsLockError, match="login-node-7"):
        refuse_second_writer(tmp_path, unlocking=False, lock_dir=locks)
    refuse_second_writer(tmp_path, unlocking=True, lock_dir=locks)
    assert not path.exists()


def test_torch_load_is_weights_only_and_nothing_is_pickled():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"^\s*import pickle|^\s*from pickle", text, re.M), path


def test_trust_remote_code_is_off_unless_a_teacher_opts_in():
    from repa_mdlm.config import TeacherConfig

    assert TeacherConfig(name="x", name_or_path="org/x").trust_remote_code is False
    teachers = (SRC / "teachers" / "teacher.py").read_text()
    assert "trust_remote_code=cfg.trust_remote_code" in teachers and "trust_remote_code is ON" in teachers
    assert re.findall(r"trust_remote_code=True", "".join(p.read_text() for p in SRC.rglob("*.py"))) == []


def test_shell_commands_quote_every_config_string():
    """Rules pass config-derived values only through {params.X:q} / {input:q} / {output:q}."""
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for placeholder in re.findall(r"\{((?:params|input|output|log)[^}]*)\}", smk.read_text()):
            if placeholder.startswith(("input", "output", "log", "params")) and "lambda" not in placeholder:
                assert placeholder.endswith(":q"), f"{smk.name}: {{{placeholder}}} is not quoted"
