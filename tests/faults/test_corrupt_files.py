"""Truncated or bit-flipped token shards, feature files and checkpoints are caught before use,
with an error naming the file and the fix; a bad checkpoint falls back to the previous one."""

import json
import logging
import os
import shutil

import pytest

from repa_mdlm.config import Cell
from repa_mdlm.io import DataError
from repa_mdlm.layout import PARTIAL_LOG
from repa_mdlm.teachers.teacher import FeatureCache
from repa_mdlm.training.checkpoint import CheckpointError
from repa_mdlm.training.trainer import Preempted, train_cell

from ..conftest import tiny_config

pytestmark = pytest.mark.faults
CELL = Cell("minilm", 2, 0.5, 0)


def _flip_byte(path, offset=-100):
    """Bit rot: one byte changes and the mtime stays, so only a checksum can tell."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture
def data_copy(data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy


def test_bit_flipped_token_shard_stops_training_before_any_step(data_copy, repa_features, tmp_path):
    _flip_byte(data_copy / "train.bin")
    with pytest.raises(DataError, match=r"train\.bin: checksum differs.*`snakemake .*manifest\.json --forcerun tokenize`"):
        train_cell(tiny_config(), CELL, data_copy, tmp_path / "run", repa_features)
    assert not (tmp_path / "run" / "train_log.partial.jsonl").exists()


def test_truncated_or_flipped_feature_file(repa_features, tmp_path):
    for damage in ("truncate", "flip"):
        folder = tmp_path / damage
        shutil.copytree(repa_features, folder)
        npy = folder / "train.npy"
        if damage == "truncate":
            npy.write_bytes(npy.read_bytes()[:-64])
        else:
            _flip_byte(npy)
        with pytest.raises(DataError, match=rf"{folder}/train\.npy.*`snakemake {folder}/train\.npy --forcerun teacher_features`"):
            FeatureCache(folder / "train")


def test_corrupt_checkpoint_falls_back_to_the_previous_one(data_dir, repa_features, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = tiny_config()  # checkpoint every 4 steps, 12 steps
    full = tmp_path / "full"
    train_cell(cfg, CELL, data_dir, full, repa_features)
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        train_cell(cfg, CELL, data_dir, run, repa_features, stop_at_step=9)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 9
    assert json.loads((run / "checkpoint.prev" / "state.json").read_text())["step"] == 8
    _flip_byte(run / "checkpoint" / "model.safetensors")
    train_cell(cfg, CELL, data_dir, run, repa_features)
    assert "checksum differs" in caplog.text and "at step 8" in caplog.text
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # steps 9..12 replayed from step 8, logged once
    ref = [json.loads(x)["loss"] for x in (full / "train_log.jsonl").read_text().splitlines() if '"loss"' in x]
    got = [json.loads(x)["loss"] for x in (run / "train_log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert got == ref


def test_a_log_row_cut_short_by_a_kill_is_dropped_and_the_run_resumes_bit_exact(data_dir, repa_features, tmp_path,
                                                                                 caplog):
    """kill -9 while a row is appended leaves half a line: resuming once crashed on it, for good."""
    cfg = tiny_config()
    full = tmp_path / "full"
    train_cell(cfg, CELL, data_dir, full, repa_features)
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        train_cell(cfg, CELL, data_dir, run, repa_features, stop_at_step=9)
    partial = run / PARTIAL_LOG
    with open(partial, "a") as f:
        f.write('{"step": 10, "loss": 5.9')
    train_cell(cfg, CELL, data_dir, run, repa_features)
    assert "cut short" in caplog.text
    strip = lambda text: [{k: v for k, v in json.loads(x).items() if k not in ("tokens_per_s", "elapsed_s")}
                          for x in text.splitlines()]
    assert strip((run / "train_log.jsonl").read_text()) == strip((full / "train_log.jsonl").read_text())


def test_a_log_cut_before_its_last_row_is_named_not_resumed_over(data_dir, repa_features, tmp_path):
    cfg = tiny_config()
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        train_cell(cfg, CELL, data_dir, run, repa_features, stop_at_step=9)
    partial = run / PARTIAL_LOG
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join([lines[0], lines[1][:10]] + lines[2:]) + "\n")
    with pytest.raises(CheckpointError, match=r"row 2 of \d+ is not a log row"):
        train_cell(cfg, CELL, data_dir, run, repa_features)


def test_no_usable_checkpoint_names_the_files(data_dir, repa_features, tmp_path):
    cfg = tiny_config()
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        train_cell(cfg, CELL, data_dir, run, repa_features, stop_at_step=9)
    _flip_byte(run / "checkpoint" / "optimizer.pt")
    (run / "checkpoint.prev" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"(?s)checkpoint/optimizer\.pt.*checkpoint\.prev/model\.safetensors.*Delete"):
        train_cell(cfg, CELL, data_dir, run, repa_features)


def test_bit_rot_is_seen_by_compare_and_the_unigram_reference(data_copy, repa_features, tmp_path):
    """compare's feature probe and the unigram perplexity read checksummed files too: a flipped byte
    (mtime kept) stops them with the file named, instead of changing the verdict silently."""
    from repa_mdlm.analysis.verdict import load_probe_features
    from repa_mdlm.data.dataset import unigram_perplexity

    features = tmp_path / "features"
    shutil.copytree(repa_features, features)
    for path, read in ((features / "train.npy", lambda: load_probe_features(features / "train.npy")),
                       (data_copy / "test.bin", lambda: unigram_perplexity(data_copy))):
        read()  # intact: fine
        stat = path.stat()
        _flip_byte(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with pytest.raises(DataError, match=rf"{path}.*(checksum|corrupt).*--forcerun"):
            read()


def test_bit_rot_in_a_trained_model_stops_its_evaluation(data_dir, tmp_path):
    from repa_mdlm.evaluation.perplexity import evaluate_run

    cfg = tiny_config()
    baseline = Cell("baseline", None, 0.0, 0)
    run = tmp_path / "run"
    train_cell(cfg, baseline, data_dir, run, None)
    evaluate_run(cfg, baseline, run, data_dir)  # intact: fine
    _flip_byte(run / "model" / "model.safetensors", offset=-8)  # a weight, not the header
    with pytest.raises(DataError, match=rf"{run}/model/model\.safetensors: the trained model differs.*"
                                        rf"`snakemake {run}/train_summary\.json --forcerun train`"):
        evaluate_run(cfg, baseline, run, data_dir)
