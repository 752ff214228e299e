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


@pytest.mark.slow
def test_second_snakemake_on_the_same_results_is_refused(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--config", f"results_dir={tmp_path}"]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "logs").exists():  # the first job has started: the lock is held
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.2)
        # --rerun-incomplete gets past the check for the first run's in-progress outputs, so the
        # refusal below comes from the lock itself
        second = subprocess.run([*cmd, "--rerun-incomplete"], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)


def test_torch_load_is_weights_only_and_nothing_is_pickled():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"^\s*import pickle|^\s*from pickle", text, re.M), path


def test_trust_remote_code_is_off_unless_a_teacher_opts_in():
    from repa_mdlm.config import TeacherConfig

    assert TeacherConfig(name="x", name_or_path="org/x").trust_remote_code is False
    teachers = (SRC / "teachers.py").read_text()
    assert "trust_remote_code=cfg.trust_remote_code" in teachers and "trust_remote_code is ON" in teachers
    assert re.findall(r"trust_remote_code=True", "".join(p.read_text() for p in SRC.rglob("*.py"))) == []


def test_shell_commands_quote_every_config_string():
    """Rules pass config-derived values only through {params.X:q} / {input:q} / {output:q}."""
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for placeholder in re.findall(r"\{((?:params|input|output|log)[^}]*)\}", smk.read_text()):
            if placeholder.startswith(("input", "output", "log", "params")) and "lambda" not in placeholder:
                assert placeholder.endswith(":q"), f"{smk.name}: {{{placeholder}}} is not quoted"
