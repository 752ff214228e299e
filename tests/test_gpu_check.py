"""scripts/gpu-check.sh, the prepared check for a lent GPU, in its CPU smoke mode: every stage runs
the code the GPU run will, at demo size, so the script cannot rot between loans."""

import json
import subprocess
import sys

import pytest
import torch

from repa_mdlm.bench import device_checks, gpu_check

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
        "env", "sanity", "pytest-gpu", "benchmark", "benchmark-compile", "cell")]
    summary = (out / "summary.md").read_text()
    assert summary in run.stdout  # the summary is the last thing printed
    assert summary.count("- PASS ") == 4 and "FAIL" not in summary
    for row in ("baseline:", "tiny-bert cached:", "baseline, torch.compile blocks:", "baseline, torch.compile backbone:"):
        assert f"- {row} step" in summary
    assert "tokens/s:" in summary and "bitsandbytes.AdamW8bit" in summary
    logged = [json.loads(line) for line in (out / "cell-train-log.jsonl").read_text().splitlines()]
    assert sum("tokens_per_s" in row for row in logged) == 6
    # what comes back from a lent machine: at most 8 files, nothing of the scratch run
    assert len(list(out.iterdir())) <= 8 and not (tmp_path / "w").exists()


def test_a_failing_stage_is_reported_and_fails_the_check(tmp_path):
    """A stage that fails (here: python cannot even start it) does not stop the others, is named in the
    summary with its exit status, and makes the script exit non-zero."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nif [ \"$2\" = repa_mdlm.bench.gpu_check ] && [ \"$3\" = env ]; then exit 3; fi\n"
                    f"exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    # only the first two stages, for time: a sanity stage that then times out at 1 s is reported too
    script = (REPO / "scripts" / "gpu-check.sh").read_text()
    cut = script[:script.index("stage pytest-gpu")] + '"$PY" -m repa_mdlm.bench.gpu_check summary --out "$out"\n' \
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
    cpu = torch.device("cpu")
    ok, detail = device_checks.check_sdpa_kernel(cpu)
    assert ok and "flash_attention_for_cpu_backward" in detail, detail
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ok, detail = device_checks.check_sdpa_kernel(cpu)
    assert not ok and device_checks.MATH_SDPA in detail


def test_head_check_fails_on_a_wrong_gradient(monkeypatch):
    from repa_mdlm.model import diffusion

    ok, _ = device_checks.check_chunked_head(torch.device("cpu"), vocab=300, rows=200, d=32, chunk_rows=64)
    assert ok
    real = diffusion.chunked_weighted_nll

    def off_by_a_tenth(hidden, *args, **kwargs):  # the loss right, its gradient 10 % too large
        total, nll = real(hidden, *args, **kwargs)
        return total + 0.1 * (total - total.detach()), nll

    monkeypatch.setattr(diffusion, "chunked_weighted_nll", off_by_a_tenth)
    ok, detail = device_checks.check_chunked_head(torch.device("cpu"), vocab=300, rows=200, d=32, chunk_rows=64)
    assert not ok and "grad_hidden 1.00e-01" in detail


def test_optimizer_check_sees_a_torch_adamw(monkeypatch):
    monkeypatch.setattr("repa_mdlm.training.optim.optimizer_class", lambda cfg: (torch.optim.AdamW, "torch.AdamW"))
    ok, detail = device_checks.check_optimizer(torch.device("cpu"))
    assert not ok and "torch.AdamW" in detail


def test_a_cell_cut_short_keeps_its_step_speeds(tmp_path, monkeypatch):
    """A time limit or crash in `repa-mdlm train` still leaves the training log and cell.json in OUT."""
    real_run = gpu_check._run

    def run(args):
        if args[3] != "train":
            return real_run(args)
        run_dir = __import__("pathlib").Path(args[args.index("--run-dir") + 1])
        run_dir.mkdir(parents=True)
        (run_dir / "train_log.partial.jsonl").write_text(
            "".join(json.dumps({"step": i, "tokens_per_s": 1000.0 * i}) + "\n" for i in range(1, 4)))
        raise RuntimeError("repa-mdlm train exited 143")

    monkeypatch.setattr(gpu_check, "_run", run)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="exited 143"):
        gpu_check.cell(out, tmp_path / "work", smoke=True)
    saved = json.loads((out / "cell.json").read_text())
    assert saved["steps_logged"] == 3 and saved["tokens_per_s_median"] == 2500.0 and "train_s" not in saved
    assert len((out / gpu_check.TRAIN_LOG_COPY).read_text().splitlines()) == 3
    assert "- tokens/s: 2,500 (median of the later steps)" in gpu_check.summary(out)
