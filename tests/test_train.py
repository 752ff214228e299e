"""Training: resume equals an uninterrupted run, cached equals online, and the debug model's
loss curve matches the stored reference (a silent change to the math fails here)."""

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from repa_mdlm.config import Cell
from repa_mdlm.training.trainer import EXIT_PREEMPTED, Preempted, train_cell

from .conftest import tiny_config

MATH_KEYS = ("step", "loss", "nelbo", "repa", "lr", "grad_norm", "t_max", "val_nelbo", "val_ppl")
REFERENCE = Path(__file__).parent / "reference" / "debug_loss_curve.json"
REPA_CELL = Cell("minilm", 2, 0.5, 0)


def _curve(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in MATH_KEYS if k in r} for r in rows]


def assert_curves_close(a, b, rel, keys=("loss", "nelbo", "repa", "val_nelbo")):
    """Same logged steps, finite values, and each value of b within rel of a's."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for row_a, row_b in zip(a, b):
        for key in keys:
            if key in row_a:
                assert math.isfinite(row_a[key]), key
                assert row_b[key] == pytest.approx(row_a[key], rel=rel), key


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


@pytest.mark.parametrize("optimizer", ["adamw", "adamw8bit"])
def test_resume_after_stop_equals_uninterrupted(data_dir, repa_features, tmp_path, optimizer):
    from repa_mdlm.evaluation.perplexity import evaluate_run

    cfg = tiny_config(train={"optimizer": optimizer})
    full = train_cell(cfg, REPA_CELL, data_dir, tmp_path / "full", repa_features)
    with pytest.raises(Preempted) as stopped:
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "resumed", repa_features, stop_at_step=5)
    assert stopped.value.code == EXIT_PREEMPTED
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = train_cell(cfg, REPA_CELL, data_dir, tmp_path / "resumed", repa_features)
    assert resumed["steps"] == full["steps"] == cfg.train.steps
    assert _curve(tmp_path / "resumed") == _curve(tmp_path / "full")  # log continued, not duplicated
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / "checkpoint").exists()  # dropped once the final model is written
    metrics = [evaluate_run(cfg, REPA_CELL, tmp_path / d, data_dir) for d in ("full", "resumed")]
    assert metrics[0]["test_nelbo"] == metrics[1]["test_nelbo"]
    assert metrics[1]["step_seconds"] == resumed["step_seconds"]  # copied for Table 1's time increase


def test_train_summary_times_the_steps_apart_from_startup_validation_and_checkpoints(data_dir, tmp_path,
                                                                                      monkeypatch):
    """step_seconds sums the optimisation steps alone, over a resume too; start-up, validation and
    checkpoint writes are timed apart (12 steps, validation at 0, 6, 12, checkpoints at 4 and 8)."""
    import itertools

    import repa_mdlm.training.trainer as train

    cfg, cell = tiny_config(), Cell("baseline", None, None, 0)
    began = time.perf_counter()
    train_cell(cfg, cell, data_dir, tmp_path / "real")
    elapsed = time.perf_counter() - began
    real = json.loads((tmp_path / "real" / "train_summary.json").read_text())  # the checksummed file
    assert real["step_seconds"] == real["train_wall_s"] > 0 and real["timings_from_step"] == 0
    parts = ("step_seconds", "startup_seconds", "validation_seconds", "checkpoint_seconds")
    assert all(real[key] > 0 for key in parts) and 0 < real["step_seconds_median"] < real["step_seconds"]
    assert sum(real[key] for key in parts) <= elapsed  # apart: no second counted twice
    # a clock that advances 1 s per reading: each timed block lasts 1 s, so the counts show what went where
    ticks = itertools.count()
    monkeypatch.setattr(train, "_clock", lambda: float(next(ticks)))
    full = train_cell(cfg, cell, data_dir, tmp_path / "full")
    assert (full["step_seconds"], full["step_seconds_median"]) == (12.0, 1.0)
    assert (full["validation_seconds"], full["checkpoint_seconds"]) == (3.0, 2.0) and full["startup_seconds"] > 0
    with pytest.raises(Preempted):
        train_cell(cfg, cell, data_dir, tmp_path / "resumed", stop_at_step=5)
    resumed = train_cell(cfg, cell, data_dir, tmp_path / "resumed")
    assert resumed["step_seconds"] == 12.0  # the 5 steps before the stop come back from the checkpoint
    assert resumed["timings_from_step"] == 5  # ... the overheads are this process's: validation at 6 and
    assert (resumed["validation_seconds"], resumed["checkpoint_seconds"]) == (2.0, 1.0)  # 12, checkpoint at 8


def test_how_often_and_on_how_much_a_run_validates_never_changes_what_it_trains(data_dir, repa_features, tmp_path):
    """Validation draws from its own generator, so a sweep may validate less often (the study
    does, to fit its time budget) and still train bit-identical weights."""
    often = tiny_config(train={"val_every": 2, "val_sequences": 8})
    rarely = tiny_config(train={"val_every": often.train.steps, "val_sequences": 4})
    train_cell(often, REPA_CELL, data_dir, tmp_path / "often", repa_features)
    train_cell(rarely, REPA_CELL, data_dir, tmp_path / "rarely", repa_features)
    logged = [sum("val_nelbo" in r for r in _curve(tmp_path / d)) for d in ("often", "rarely")]
    assert logged[0] > logged[1] >= 1
    a, b = _weights(tmp_path / "often"), _weights(tmp_path / "rarely")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cached_and_online_training_agree(data_dir, repa_features, tmp_path):
    cached = tiny_config(train={"steps": 4})
    online = tiny_config(train={"steps": 4}, teacher_features="online")
    train_cell(cached, REPA_CELL, data_dir, tmp_path / "cached", repa_features)
    train_cell(online, REPA_CELL, data_dir, tmp_path / "online", None)
    # the cache is filled in other batches than training reads, so features can differ by
    # one bf16 rounding step where a value sits on a rounding boundary
    assert_curves_close(_curve(tmp_path / "cached"), _curve(tmp_path / "online"), rel=1e-4)


def test_second_writer_is_refused(data_dir, tmp_path):
    from repa_mdlm.training.trainer import _RunLock

    with _RunLock(tmp_path / "run"):
        with pytest.raises(RuntimeError, match="another process is training this cell"):
            train_cell(tiny_config(), Cell("baseline", None, None, 0), data_dir, tmp_path / "run")


def test_debug_model_matches_reference_loss_curve(data_dir, repa_features, tmp_path):
    """torchtitan-style: the tiny debug model's per-step losses are stored; any change to the
    objective, masking, schedule, REPA or optimizer wiring moves them.
    Regenerate deliberately with REPA_MDLM_UPDATE_REFERENCE=1."""
    cfg = tiny_config(train={"log_every": 1})
    curves = {}
    for cell in (Cell("baseline", None, None, 0), REPA_CELL):
        train_cell(cfg, cell, data_dir, tmp_path / cell.name, repa_features)
        curves[cell.name] = _curve(tmp_path / cell.name)
    if os.environ.get("REPA_MDLM_UPDATE_REFERENCE"):
        REFERENCE.write_text(json.dumps(curves, indent=1) + "\n")
    reference = json.loads(REFERENCE.read_text())
    assert set(reference) == set(curves)
    for name, rows in reference.items():
        assert [r["step"] for r in rows] == [r["step"] for r in curves[name]]
        for key in ("loss", "nelbo", "repa", "val_nelbo"):
            ref = np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows], dtype=float)
            got = np.array([r.get(key) if r.get(key) is not None else np.nan for r in curves[name]], dtype=float)
            np.testing.assert_allclose(got, ref, rtol=1e-4, equal_nan=True, err_msg=f"{name}: {key}")
    # the curve is a real learning curve, not a constant
    losses = [r["nelbo"] for r in reference["baseline_s0"] if "nelbo" in r]
    assert losses[-1] < losses[0]


def test_data_order_follows_the_seed_and_pairs_the_cells_of_a_seed(data_dir, repa_features, tmp_path):
    """Seeds differ in data order (not only in init and masks); all cells of one seed read the
    same batches; train.data_seed fixes one order for every seed."""
    from repa_mdlm.training.trainer import Trainer

    def first_batch(cfg, cell):
        return Trainer(cfg, cell, data_dir, tmp_path / cell.name, repa_features).load_batch(0)["x0"]

    cfg = tiny_config()
    seed0, seed1 = first_batch(cfg, Cell("baseline", None, None, 0)), first_batch(cfg, Cell("baseline", None, None, 1))
    assert not torch.equal(seed0, seed1)
    assert torch.equal(seed1, first_batch(cfg, Cell("minilm", 2, 0.5, 1)))
    fixed = tiny_config(train={"data_seed": 0})
    assert torch.equal(first_batch(fixed, Cell("baseline", None, None, 1)), seed0)


def test_missing_bitsandbytes_stops_an_adamw8bit_cell_instead_of_changing_its_optimizer(data_dir, tmp_path,
                                                                                         monkeypatch):
    """The paper's optimizer never silently becomes torch's AdamW: the job stops before the model is
    built and names the key and both fixes."""
    from repa_mdlm.config import ConfigError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(ConfigError, match=r"(?s)train\.optimizer = adamw8bit needs bitsandbytes.*"
                                          r"pip install bitsandbytes.*train\.optimizer: adamw"):
        train_cell(tiny_config(train={"optimizer": "adamw8bit"}), Cell("baseline", None, None, 0), data_dir,
                   tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint").exists()
    monkeypatch.undo()
    from repa_mdlm.training.optim import optimizer_class

    assert optimizer_class(tiny_config(train={"optimizer": "adamw8bit"}))[1] == "bitsandbytes.AdamW8bit"
