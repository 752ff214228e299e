"""scripts/gpu-check.sh, the prepared check for a lent GPU, in its CPU smoke mode: every stage runs
the code the GPU run will, at demo size, so the script cannot rot between loans."""

import subprocess
import sys

import pytest
import torch

from repa_mdlm import gpu_check

from .conftest import REPO


@pytest.mark.slow
def test_smoke_mode_runs_every_stage_and_ends_with_a_summary(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(["scripts/gpu-check.sh", "--smoke", "--out", str(out)], cwd=REPO, capture_output=True,
                         text=True, timeout=900, env={"PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin",
                                                      "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "w")})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    stages = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()[1:]]
    assert [(name, rc) for name, rc, *_ in stages] == [(name, "0") for name in (
        "env", "sanity", "pytest-gpu", "benchmark", "benchmark-compile-backbone", "cell")]
    summary = (out / "summary.md").read_text()
    assert summary in run.stdout  # the summary is the last thing printed
    assert summary.count("- PASS ") == 4 and "FAIL" not in summary
    for row in ("baseline:", "tiny-bert cached:", "baseline, torch.compile blocks:", "baseline, torch.compile backbone:"):
        assert f"- {row} step" in summary
    assert "tokens/s:" in summary and "bitsandbytes.AdamW8bit" in summary
    # what comes back from a lent machine: at most 8 files, nothing of the scratch run
    assert len(list(out.iterdir())) <= 8 and not (tmp_path / "w").exists()


def test_a_failing_stage_is_reported_and_fails_the_check(tmp_path):
    """A stage that fails (here: python cannot even start it) does not stop the others, is named in the
    summary with its exit status, and makes the script exit non-zero."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nif [ \"$2\" = repa_mdlm.gpu_check ] && [ \"$3\" = env ]; then exit 3; fi\n"
                    f"exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    # only the first two stages, for time: a sanity stage that then times out at 1 s is reported too
    script = (REPO / "scripts" / "gpu-check.sh").read_text()
    cut = script[:script.index("stage pytest-gpu")] + '"$PY" -m repa_mdlm.gpu_check summary --out "$out"\n' \
        + script[script.rindex("! cut"):]
    short = tmp_path / "gpu-check.sh"
    short.write_text(script_in_repo(cut).replace('limits=(60 120', 'limits=(60 1'))
    run = subprocess.run(["bash", str(short), "--smoke", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)})
    assert run.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "| env | 3 |" in summary and "| sanity | 124 (time limit) |" in summary


def script_in_repo(text: str) -> str:
    return text.replace('cd "$(dirname "$0")/.."', f'cd "{REPO}"')


def test_sdpa_check_fails_when_attention_falls_back_to_the_math_kernel():
    model = gpu_check.attention_student(torch.device("cpu"))
    assert {k for k in gpu_check.sdpa_kernels(model, torch.device("cpu"), batch=1, length=32)} & set(gpu_check.FUSED_SDPA)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ran = gpu_check.sdpa_kernels(model, torch.device("cpu"), batch=1, length=32)
    assert gpu_check.MATH_SDPA in ran and not set(gpu_check.FUSED_SDPA) & ran


def test_optimizer_check_sees_a_torch_adamw(monkeypatch):
    monkeypatch.setattr("repa_mdlm.train.optimizer_class", lambda cfg: (torch.optim.AdamW, "torch.AdamW"))
    ok, detail = gpu_check.check_optimizer(torch.device("cpu"))
    assert not ok and "torch.AdamW" in detail
