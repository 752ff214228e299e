"""Successive halving's training side (training/rungs.py): a cell trained to a rung has trained exactly
the first steps of its full run, and a cell that goes on ends bit-identical to a run straight through."""

import json
from pathlib import Path

import pytest

from repa_mdlm import layout
from repa_mdlm.config import Cell, ConfigError
from repa_mdlm.training.rungs import train_to_rung
from repa_mdlm.training.trainer import train_cell

from .conftest import tiny_config

REPA_CELL = Cell("minilm", 2, 0.5, 0)
# a cosine schedule and the masking curriculum: both read train.steps, so a rung that re-scaled them
# to its own horizon would train other steps than the full run's first ones
HORIZON_BOUND = {"train": {"lr_schedule": "cosine"},
                 "diffusion": {"curriculum": {"enabled": True, "start": 0.05, "end": 1.0, "ramp_fraction": 1.0}}}


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _without(rows, keys):
    return [{k: v for k, v in row.items() if k not in keys} for row in rows]


def _metrics_without_timing(cfg, cell, run, data_dir):
    from repa_mdlm.evaluation.perplexity import evaluate_run

    metrics = evaluate_run(cfg, cell, run, data_dir)
    return {k: v for k, v in metrics.items() if k not in (*layout.TIMING_KEYS, "train_wall_s", "train_tokens_per_s")}


def test_a_cell_that_goes_on_from_its_rungs_ends_bit_identical_to_one_trained_straight_through(
        data_dir, repa_features, tmp_path):
    cfg = tiny_config(**HORIZON_BOUND)
    train_cell(cfg, REPA_CELL, data_dir, tmp_path / "straight", repa_features)
    straight_log = _rows(tmp_path / "straight" / layout.TRAIN_LOG)

    halved = tmp_path / "halved"
    record = train_to_rung(cfg, REPA_CELL, data_dir, halved, repa_features, 6, str(halved / layout.rung_record(6)))
    # the rung: exactly the full run's first 6 steps, judged on validation alone, its checkpoint kept
    assert _without(_rows(halved / layout.PARTIAL_LOG), layout.LOG_TIMING_KEYS) == \
        _without([r for r in straight_log if r["step"] <= 6], layout.LOG_TIMING_KEYS)
    assert record["val_ppl"] == next(r["val_ppl"] for r in straight_log if r["step"] == 6)
    assert record["val_curve"] == [[r["step"], r["val_ppl"]] for r in straight_log if r["step"] <= 6 and "val_ppl" in r]
    assert (halved / layout.CHECKPOINT).exists() and not (halved / layout.MODEL).exists()
    assert not list(halved.glob("metrics*"))  # the test set is not read at a rung

    train_cell(cfg, REPA_CELL, data_dir, halved, repa_features)  # kept: train rule resumes the rung's checkpoint
    for name in ("model.safetensors", "repa_projection.safetensors"):
        assert (halved / layout.MODEL / name).read_bytes() == (tmp_path / "straight" / layout.MODEL / name).read_bytes()
    # the log and metrics.json differ only in wall-clock fields, as two runs straight through do
    assert _without(_rows(halved / layout.TRAIN_LOG), layout.LOG_TIMING_KEYS) == \
        _without(straight_log, layout.LOG_TIMING_KEYS)
    assert _metrics_without_timing(cfg, REPA_CELL, halved, data_dir) == \
        _metrics_without_timing(cfg, REPA_CELL, tmp_path / "straight", data_dir)

    # the test above can fail: a rung trained on its own horizon (schedule and curriculum re-scaled to
    # 6 steps) is not the full run's prefix
    rescaled = tiny_config(**{**HORIZON_BOUND, "train": {"lr_schedule": "cosine", "steps": 6}})
    train_cell(rescaled, REPA_CELL, data_dir, tmp_path / "rescaled", repa_features)
    assert _rows(tmp_path / "rescaled" / layout.TRAIN_LOG)[-1]["val_ppl"] != record["val_ppl"]


def test_a_rung_of_a_finished_run_reads_its_log_and_trains_nothing(data_dir, tmp_path):
    """Halving turned on over a finished full grid: each rung's record comes from the cell's own log."""
    cfg, cell = tiny_config(), Cell("baseline", None, None, 0)
    run = tmp_path / "run"
    train_cell(cfg, cell, data_dir, run)
    model_bytes = (run / layout.MODEL / "model.safetensors").read_bytes()
    record = train_to_rung(cfg, cell, data_dir, run, None, 6, str(run / layout.rung_record(6)))
    assert record["from"] == "the finished run's log" and not (run / layout.CHECKPOINT).exists()
    assert record["val_ppl"] == next(r["val_ppl"] for r in _rows(run / layout.TRAIN_LOG) if r["step"] == 6)
    assert (run / layout.MODEL / "model.safetensors").read_bytes() == model_bytes


@pytest.mark.parametrize("step", [5, 12, 0])
def test_a_rung_off_the_validation_steps_or_at_the_end_is_refused_naming_the_key(data_dir, tmp_path, step):
    cfg = tiny_config()
    with pytest.raises(ConfigError, match="halving.rungs"):
        train_to_rung(cfg, Cell("baseline", None, None, 0), data_dir, tmp_path, None, step, str(tmp_path / "r.json"))
    assert not (tmp_path / layout.CHECKPOINT).exists()


def test_a_checkpoint_of_another_identity_is_not_read_as_the_rung_and_a_diverged_cell_is_judged(
        data_dir, tmp_path, monkeypatch):
    import math

    import repa_mdlm.training.rungs as rungs
    from repa_mdlm.analysis.halving import judge_rung_main
    from repa_mdlm.training.trainer import NonFiniteLoss

    cfg, cell = tiny_config(), Cell("baseline", None, None, 0)
    run = tmp_path / "run"
    # a checkpoint past the rung, from another spec (say, another learning rate): trained again, never read
    (run / layout.CHECKPOINT).mkdir(parents=True)
    (run / layout.CHECKPOINT / layout.CHECKPOINT_STATE).write_text(json.dumps({"step": 12, "identity": {"spec_sha256": "x"}}))
    (run / layout.PARTIAL_LOG).write_text(json.dumps({"step": 6, "val_ppl": 1.0, "val_nelbo": 0.0}) + "\n")
    record = train_to_rung(cfg, cell, data_dir, run, None, 6, str(run / layout.rung_record(6)))
    assert record["val_ppl"] != 1.0 and record["from"] == "the run's checkpoint"
    assert list((run / layout.SUPERSEDED).iterdir())  # set aside, not deleted

    def diverge(*args, **kwargs):
        raise NonFiniteLoss("non-finite loss at step 4")

    monkeypatch.setattr(rungs, "train_cell", diverge)
    other = tmp_path / "diverged"
    bad = train_to_rung(cfg, Cell("minilm", 2, 0.5, 0), data_dir, other, None, 6, str(other / "step6.json"))
    assert math.isnan(bad["val_ppl"]) and "non-finite" in bad["diverged"]
    good = dict(record, cell="minilm_L2_w1.00_s0")
    from repa_mdlm.io import atomic_write_checked_json
    atomic_write_checked_json(tmp_path / "good.json", good)
    decisions = {d.configuration: d for d in judge_rung_main([str(other / "step6.json"), str(tmp_path / "good.json")],
                                                            1, 2, str(tmp_path / "rung1.csv"))}
    assert not decisions["minilm_L2_w0.50"].kept and decisions["minilm_L2_w1.00"].kept
