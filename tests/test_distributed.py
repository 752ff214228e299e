"""One cell on several ranks (torchrun, gloo on CPU) equals one rank: same loss curve, one writer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repa_mdlm.config import Cell
from repa_mdlm.config.specs import cell_spec
from repa_mdlm.training.distributed import claim_gpu

from .conftest import tiny_config

CELL = Cell("minilm", 2, 0.5, 0)


def _train(world_size, cfg, data_dir, features, run_dir):
    spec = json.dumps(cell_spec(cfg, CELL))
    args = ["train", "--spec", spec, "--cell", CELL.name, "--data", str(data_dir), "--run-dir", str(run_dir),
            "--features", str(features), "--threads", "1"]
    if world_size == 1:
        cmd = [sys.executable, "-m", "repa_mdlm", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
               "-m", "repa_mdlm", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_ranks_equal_one_rank(data_dir, repa_features, tmp_path):
    cfg = tiny_config(train={"steps": 6, "log_every": 1, "val_every": 3, "optimizer": "adamw8bit"})
    one = _train(1, cfg, data_dir, repa_features, tmp_path / "one")
    two = _train(2, cfg, data_dir, repa_features, tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two]  # rank 1 wrote nothing extra
    for a, b in zip(one, two):
        for key in ("loss", "nelbo", "repa", "val_nelbo", "grad_norm"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["tokens"] == 6 * 8 * 32


def test_batch_must_split_across_ranks(data_dir, monkeypatch, tmp_path):
    from repa_mdlm.config import ConfigError
    from repa_mdlm.training.distributed import Distributed
    from repa_mdlm.training.trainer import Trainer

    monkeypatch.setattr(Distributed, "from_env", classmethod(lambda cls: cls(0, 3, 0)))
    with pytest.raises(ConfigError, match="must divide into 3 ranks"):
        Trainer(tiny_config(), Cell("baseline", None, None, 0), data_dir, tmp_path)


def test_each_job_claims_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    first = claim_gpu(2, tmp_path)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    second = claim_gpu(2, tmp_path)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(RuntimeError, match="all 2 GPUs are held"):
        claim_gpu(2, tmp_path)
    first.close()  # the job ended: its GPU is free again
    assert claim_gpu(2, tmp_path) is not None and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    second.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # Slurm (or the user) chose: leave it
    assert claim_gpu(2, tmp_path) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
