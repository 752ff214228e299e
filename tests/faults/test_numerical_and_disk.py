"""NaN/inf losses stop the cell (or are skipped, bounded and logged); a failed write keeps
the previous state and says what failed."""

import errno
import json

import pytest
import torch

import repa_mdlm.training.objective as objective_module
import repa_mdlm.training.trainer as train_module
from repa_mdlm.config import Cell
from repa_mdlm.training.checkpoint import CheckpointError
from repa_mdlm.training.trainer import NonFiniteLoss, Preempted, train_cell

from ..conftest import tiny_config

pytestmark = pytest.mark.faults
BASELINE = Cell("baseline", None, None, 0)


@pytest.fixture
def nan_at_step_6(monkeypatch):
    real = objective_module.masked_head_nelbo  # the training loss's N-ELBO (validation does not call it here)
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        total, per_seq = real(*args, **kwargs)
        calls["n"] += 1
        if 10 < calls["n"] <= 12:  # micro-batches of step 6 (2 per step)
            total = total * float("nan")
        return total, per_seq

    monkeypatch.setattr(objective_module, "masked_head_nelbo", poisoned)


def test_nan_before_the_first_checkpoint_says_none_was_kept(data_dir, tmp_path, nan_at_step_6):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"at step 6.*no checkpoint had been written yet") as failure:
        train_cell(tiny_config(train={"checkpoint_every": 100}), BASELINE, data_dir, run)
    assert "is kept in" not in str(failure.value)
    assert not (run / "checkpoint").exists()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, nan_at_step_6):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss or gradient at step 6.*max_bad_batches"):
        train_cell(tiny_config(), BASELINE, data_dir, run)
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4  # checkpoint_every = 4: the last good one
    from safetensors.torch import load_file

    assert all(torch.isfinite(v).all() for v in load_file(str(run / "checkpoint" / "model.safetensors")).values())


def test_bounded_skipping_of_bad_batches_is_logged(data_dir, tmp_path, nan_at_step_6):
    cfg = tiny_config(train={"max_bad_batches": 1, "log_every": 1})
    train_cell(cfg, BASELINE, data_dir, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in rows if r.get("skipped")]
    assert skipped == [6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r and not r.get("skipped"))


@pytest.mark.parametrize("code,message", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied")])
def test_failed_checkpoint_write_keeps_the_previous_checkpoint(data_dir, tmp_path, monkeypatch, code, message):
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        train_cell(tiny_config(), BASELINE, data_dir, run, stop_at_step=4)
    before = (run / "checkpoint" / "state.json").read_text()

    def fail(*args, **kwargs):
        raise OSError(code, message)

    monkeypatch.setattr(train_module.torch, "save", fail)
    with pytest.raises(CheckpointError, match=rf"step-8 checkpoint.*{message}.*previous checkpoint.*intact"):
        train_cell(tiny_config(), BASELINE, data_dir, run)
    assert (run / "checkpoint" / "state.json").read_text() == before
    assert not (run / "checkpoint.tmp").exists()
    monkeypatch.undo()
    summary = train_cell(tiny_config(), BASELINE, data_dir, run)  # space is back: resumes from step 4
    assert summary["steps"] == 12
