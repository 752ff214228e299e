"""Experiment tracking: TensorBoard event files read back (scalars, resume without duplicates, HParams),
a W&B offline run with the cell's config and summary, and training that goes on without a tracker."""

from __future__ import annotations

import builtins
import json
import shutil
import warnings

import pytest

from repa_mdlm.config import Cell, TrackingConfig
from repa_mdlm.evaluation.perplexity import evaluate_run
from repa_mdlm.training.tracking import TENSORBOARD_DIR, TrackingWarning, track_evaluation
from repa_mdlm.training.trainer import Preempted, train_cell

from .conftest import tiny_config

BASELINE = Cell("baseline", None, None, 0)


def _config(backend: str, **tracking):
    return tiny_config(train={"steps": 8, "log_every": 1, "val_every": 4, "checkpoint_every": 2},
                       tracking={"backend": backend, **tracking})


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc, tag) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def test_tensorboard_resume_logs_every_step_once_and_evaluation_adds_hparams(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    cfg, run = _config("tensorboard"), tmp_path / "baseline_s0"
    with pytest.raises(Preempted):  # checkpoints at 2 and 4; rows 1..4 are logged
        train_cell(cfg, BASELINE, data_dir, run, stop_at_step=4)
    # a crash after step 4 whose last good checkpoint is step 2: steps 3 and 4 are logged twice
    shutil.rmtree(run / "checkpoint")
    (run / "checkpoint.prev").rename(run / "checkpoint")
    train_cell(cfg, BASELINE, data_dir, run)
    rows, acc = _rows(run), _events(run)
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert _steps(acc, "train/loss") == list(range(1, 9))  # each step once, in order
    assert loss == pytest.approx({r["step"]: r["loss"] for r in rows if "loss" in r}, rel=1e-6)
    assert _steps(acc, "val/ppl") == [0, 4, 8]
    assert {"train/nelbo", "train/lr", "train/grad_norm", "train/tokens_per_s", "memory/max_rss_gb"} <= set(
        acc.Tags()["scalars"])
    assert "train/repa" not in acc.Tags()["scalars"]  # the baseline has none

    metrics = evaluate_run(cfg, BASELINE, run, data_dir)
    for _ in range(2):  # a re-evaluation replaces the first one
        track_evaluation(cfg, BASELINE, run, metrics)
    acc = _events(run)
    assert [e.value for e in acc.Scalars("test/ppl")] == pytest.approx([metrics["test_ppl"]])
    assert _steps(acc, "train/loss") == list(range(1, 9))
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v.ListFields()[0][1] for k, v in session.session_start_info.hparams.items()}
    assert hparams["cell"] == "baseline_s0" and hparams["teacher"] == "baseline" and hparams["layer"] == "none"
    assert hparams["train.steps"] == 8 and hparams["seed"] == 0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "test/ppl" in {m.name.tag for m in experiment.metric_infos}


def _wandb_records(path):
    """The records of an offline run's .wandb file (a LevelDB-style log of protobuf records, 32 KiB
    blocks), as (kind, {key: value}) with the run's config, each summary update and each history row."""
    import struct

    from wandb.proto import wandb_internal_pb2

    def items(updates):
        return {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in updates}

    data, pos, pending = path.read_bytes(), 7, b""  # after the ":W&B" header
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk  # full or first; middle and last continue it
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            what = record.WhichOneof("record_type")
            if what == "run":
                yield what, {"id": record.run.run_id, "name": record.run.display_name, "group": record.run.run_group,
                             "tags": list(record.run.tags), "config": items(record.run.config.update)}
            elif what in ("summary", "history"):
                yield what, items(record.summary.update if what == "summary" else record.history.item)


def test_wandb_offline_run_has_the_cell_config_and_summary(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    cfg, run = _config("wandb", project="repa-test", group="sweep", tags=["tiny"]), tmp_path / "baseline_s0"
    with pytest.raises(Preempted):
        train_cell(cfg, BASELINE, data_dir, run, stop_at_step=4)
    train_cell(cfg, BASELINE, data_dir, run)  # resumes the same W&B run
    metrics = evaluate_run(cfg, BASELINE, run, data_dir)
    track_evaluation(cfg, BASELINE, run, metrics)
    import wandb

    wandb.teardown()  # the service writes the run files: wait for it, as a job's exit does
    run_id = json.loads((run / "tracking.json").read_text())["wandb_id"]
    assert run_id.startswith("baseline_s0-")
    found = sorted((tmp_path / "wandb-dir").glob(f"*/wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(found) == 3  # two trainings and the evaluation, one run id: `wandb sync` joins them
    records = [r for path in found for r in _wandb_records(path)]
    runs = [r for kind, r in records if kind == "run"]
    assert {(r["id"], r["name"], r["group"], tuple(r["tags"])) for r in runs} == {(run_id, "baseline_s0", "sweep",
                                                                                   ("tiny",))}
    config = runs[0]["config"]
    assert config["cell"] == "baseline_s0" and config["teacher"] == "baseline" and config["train"]["steps"] == 8
    steps = [r["_step"] for kind, r in records if kind == "history"]
    assert steps == list(range(0, 9))  # each step once, across the preemption
    losses = {r["_step"]: r["train/loss"] for kind, r in records if kind == "history" and "train/loss" in r}
    assert losses == pytest.approx({r["step"]: r["loss"] for r in _rows(run) if "loss" in r})
    summary = {}
    for kind, r in records:
        summary.update(r if kind == "summary" else {})
    assert summary["test/ppl"] == pytest.approx(metrics["test_ppl"]) and summary["steps"] == 8


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_training_without_the_tracker_package_warns_once(data_dir, tmp_path, monkeypatch, backend):
    real_import = builtins.__import__

    def no_tracker(name, *args, **kwargs):
        if name.split(".")[0] == backend or name == "torch.utils.tensorboard":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tracker)
    cfg, run = _config(backend), tmp_path / "baseline_s0"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train_cell(cfg, BASELINE, data_dir, run)
    tracking = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(tracking) == 1, [str(w.message) for w in tracking]
    assert backend in str(tracking[0].message) and "JSONL" in str(tracking[0].message)
    assert summary["steps"] == 8 and [r["step"] for r in _rows(run)] == list(range(9))
    assert not (run / TENSORBOARD_DIR).exists()


def test_the_tracking_section_is_in_no_spec_and_checks_its_fields():
    from repa_mdlm.config.specs import cell_spec

    plain, tracked = tiny_config(), _config("wandb", tags=["a"])
    assert cell_spec(plain, BASELINE) == cell_spec(tiny_config(tracking={"backend": "tensorboard"}), BASELINE)
    assert "tracking" not in json.dumps(cell_spec(tracked, BASELINE))
    assert TrackingConfig(backend="nope").check() and TrackingConfig(tags=["a,b"]).check()
    assert TrackingConfig().backend == "none" and TrackingConfig().mode == "offline"


def test_the_jobs_take_the_tracking_section_on_their_command_line():
    from repa_mdlm.config import ConfigError
    from repa_mdlm.workflow import cli

    tracking = json.dumps({"backend": "wandb", "project": "p", "tags": ["x"]})
    args = cli.build_parser().parse_args(["evaluate", "--spec", "{}", "--cell", "c", "--data", "d", "--run-dir", "r",
                                          "--out", "o", "--tracking", tracking])
    cfg = cli._with_tracking(tiny_config(), args.tracking)
    assert (cfg.tracking.backend, cfg.tracking.project, cfg.tracking.tags, cfg.tracking.mode) == ("wandb", "p", ["x"],
                                                                                                  "offline")
    assert cli._with_tracking(tiny_config(), None).tracking.backend == "none"
    with pytest.raises(ConfigError, match="tracking.backend"):
        cli._with_tracking(tiny_config(), json.dumps({"backend": "mlflow"}))
