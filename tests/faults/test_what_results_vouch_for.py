"""What a checkpoint, a cell name and a feature cache vouch for, and what happens when it does not
hold: a checkpoint of another spec or other inputs is moved aside, never resumed; a cell's name reads
back to exactly its values; a feature cache of another teacher (or of this teacher configured
otherwise) is refused with the command that rebuilds it."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from repa_mdlm.config import Cell, Config, ConfigError, TeacherConfig, cell_name_errors
from repa_mdlm.config.specs import cell_spec
from repa_mdlm.io import DataError
from repa_mdlm.training.checkpoint import identity_differences, training_identity
from repa_mdlm.training.trainer import Preempted, train_cell

from ..conftest import check_raw_config, tiny_config

pytestmark = pytest.mark.faults
REPA_CELL = Cell("minilm", 2, 0.5, 0)


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


def _log_steps(run_dir):
    return [json.loads(line)["step"] for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- checkpoints
def test_a_checkpoint_written_under_another_lr_is_moved_aside_and_training_restarts(data_dir, repa_features, tmp_path,
                                                                                      caplog):
    """Killed at step 4 under lr 3e-3, re-run under lr 1e-3: the model must be the new lr's alone (bit-identical
    to a straight run), not a mix of the two; the old checkpoint is kept under superseded/, with the reason logged."""
    old, new = tiny_config(), tiny_config(train={"lr": 1e-3})
    with pytest.raises(Preempted):
        train_cell(old, REPA_CELL, data_dir, tmp_path / "run", repa_features, stop_at_step=4)
    with caplog.at_level("WARNING", logger="repa_mdlm.training.checkpoint"):
        train_cell(new, REPA_CELL, data_dir, tmp_path / "run", repa_features)
    straight = train_cell(new, REPA_CELL, data_dir, tmp_path / "straight", repa_features)
    a, b = _weights(tmp_path / "run"), _weights(tmp_path / "straight")
    assert all(np.array_equal(a[k].float().numpy(), b[k].float().numpy()) for k in a)
    assert _log_steps(tmp_path / "run") == _log_steps(tmp_path / "straight")  # restarted at 0, no old rows
    assert straight["steps"] == new.train.steps
    aside = list((tmp_path / "run" / "superseded").iterdir())
    assert len(aside) == 1 and (aside[0] / "checkpoint" / "state.json").exists()
    assert json.loads((aside[0] / "checkpoint" / "state.json").read_text())["step"] == 4
    assert (aside[0] / "train_log.partial.jsonl").exists()  # the old log goes with its checkpoint
    assert "train.lr: 0.003 -> 0.001" in caplog.text and str(aside[0]) in caplog.text


def test_a_checkpoint_of_the_same_spec_and_inputs_still_resumes(data_dir, repa_features, tmp_path):
    from repa_mdlm.io import json_digest, read_json_object

    cfg = tiny_config()
    with pytest.raises(Preempted):
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features, stop_at_step=4)
    train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features)
    assert not (tmp_path / "run" / "superseded").exists()
    assert _log_steps(tmp_path / "run").count(0) == 1
    # the finished model says what it was trained on
    trained_on = read_json_object(tmp_path / "run" / "train_summary.json", "summary")["trained_on"]
    assert trained_on["spec_sha256"] == json_digest(cell_spec(cfg, REPA_CELL))
    assert trained_on["features_sha256"] == json.loads((repa_features / "train.json").read_text())["sha256"]


def test_a_checkpoint_that_records_no_identity_is_not_trusted(data_dir, repa_features, tmp_path):
    """A checkpoint written before checkpoints vouched for their spec may be of any config: set aside, not resumed."""
    cfg = tiny_config()
    with pytest.raises(Preempted):
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features, stop_at_step=4)
    state_path = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    del state["identity"]
    state_path.write_text(json.dumps(state))
    summary = train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features)
    assert summary["steps"] == cfg.train.steps
    assert (tmp_path / "run" / "superseded" / "unvouched" / "checkpoint").exists()


def test_a_checkpoint_is_not_resumed_on_rebuilt_token_arrays_tokenizer_or_features():
    spec = cell_spec(tiny_config(), REPA_CELL)
    manifest = {"seq_len": 32, "eos_token_id": 0, "mask_token_id": 1, "tokenizer_size": 512,
                "tokenizer_files": {"tokenizer.json": "aa"},
                "splits": {"train": {"sha256": "t"}, "val": {"sha256": "v"}, "test": {"sha256": "x"}}}
    base = training_identity(spec, manifest, {"sha256": "f"})
    assert identity_differences(base, training_identity(spec, manifest, {"sha256": "f"})) == []
    test_rebuilt = {**manifest, "splits": {**manifest["splits"], "test": {"sha256": "y"}}}
    assert identity_differences(base, training_identity(spec, test_rebuilt, {"sha256": "f"})) == []  # not read
    for changed in ({**manifest, "mask_token_id": 2}, {**manifest, "tokenizer_files": {"tokenizer.json": "bb"}},
                    {**manifest, "splits": {**manifest["splits"], "train": {"sha256": "t2"}}}):
        assert identity_differences(base, training_identity(spec, changed, {"sha256": "f"})) == [
            "the token arrays or the tokenizer (mask id included) were rebuilt since"]
    assert identity_differences(base, training_identity(spec, manifest, {"sha256": "g"})) == [
        "the teacher's feature cache differs"]
    other = cell_spec(tiny_config(repa={"weights": [0.75]}), Cell("minilm", 2, 0.75, 0))
    assert "repa.weights: [0.5] -> [0.75]" in identity_differences(base, training_identity(other, manifest,
                                                                                            {"sha256": "f"}))[0]


def test_a_foreign_checkpoint_prev_is_never_the_fallback(data_dir, repa_features,
                                                                                       tmp_path):
    """Two checkpoints, both of another lr: both are set aside (not one resumed as the 'older valid' one)."""
    old = tiny_config(train={"checkpoint_every": 2})
    with pytest.raises(Preempted):
        train_cell(old, REPA_CELL, data_dir, tmp_path / "run", repa_features, stop_at_step=5)
    assert (tmp_path / "run" / "checkpoint.prev").exists()
    new = tiny_config(train={"checkpoint_every": 2, "lr": 1e-3})
    train_cell(new, REPA_CELL, data_dir, tmp_path / "run", repa_features)
    aside = next((tmp_path / "run" / "superseded").iterdir())
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint", "checkpoint.prev", "train_log.partial.jsonl"]


# ---------------------------------------------------------------- cell names
@pytest.mark.parametrize("weights", [[0.5, 0.501], [0.001, 0.004], [0.25, 0.2500001], [1e-7, 2e-7, 1.0]])
def test_weights_that_round_alike_get_names_that_read_back_exactly(paper, weights):
    paper["repa"]["weights"] = weights
    cfg = check_raw_config(paper)
    cells = cfg.cells()
    assert len({c.name for c in cells}) == len(cells) == 1 + 6 * 5 * len(weights)
    assert all(Cell.parse(c.name) == c for c in cells)
    assert {c.weight for c in cells if not c.is_baseline} == set(weights)


def test_the_paper_grid_keeps_its_cell_names(paper):
    names = {c.name for c in check_raw_config(paper).cells()}
    assert {"baseline_s0", "qwen3-0.6b_L3_w0.25_s0", "bertimbau_L23_w1.00_s0"} <= names


def test_any_weight_name_reads_back_exactly():
    rng = random.Random(0)
    weights = [rng.uniform(0, 100) for _ in range(300)] + [rng.choice([1, 2, 5]) * 10.0 ** -rng.randint(1, 12)
                                                          for _ in range(300)]
    for w in weights:
        cell = Cell("e5-pt", 3, w, 0)
        assert Cell.parse(cell.name) == cell, cell.name
        assert "e" not in cell.name.split("_w")[1], cell.name  # no exponent in a folder name


def test_cells_whose_names_collide_are_refused_naming_both():
    errors = cell_name_errors([Cell("minilm", 2, 0.5, 0), Cell("minilm", 2, 0.5, 0), Cell("minilm", 2, 0.75, 0)])
    assert errors == []  # the same cell twice is one run folder, not a collision
    # a name that reads back to other values (what a two-decimal name did to 0.501)
    class Rounded(Cell):
        @property
        def name(self):
            return f"{self.teacher}_L{self.layer}_w{self.weight:.2f}_s{self.seed}"

    errors = cell_name_errors([Rounded("minilm", 2, 0.5, 0), Rounded("minilm", 2, 0.501, 0)])
    assert any("reads back as" in e and "0.501" in e for e in errors)
    assert any("would both be named 'minilm_L2_w0.50_s0'" in e for e in errors)


@pytest.mark.parametrize("key, value, shown", [
    (("repa", "layers"), [2.0], "repa.layers[0] = 2.0: must be an integer (write 2 rather than 2.0)"),
    (("seeds",), [0.0], "seeds[0] = 0.0: must be an integer"),
    (("train", "steps"), 120.0, "train.steps = 120.0: must be an integer (write 120"),
    (("train", "global_batch"), 16.0, "train.global_batch = 16.0: must be an integer"),
    (("resources", "train", "gpus"), 1.0, "resources.train.gpus = 1.0: must be an integer"),
    (("evaluate", "sequences"), 64.0, "evaluate.sequences = 64.0: must be an integer"),
    (("student", "num_hidden_layers"), 24.0, "student.num_hidden_layers = 24.0: must be an integer"),
])
def test_an_integer_setting_written_as_a_float_is_refused_at_planning(paper, key, value, shown):
    section = paper
    for part in key[:-1]:
        section = section.setdefault(part, {})
    section[key[-1]] = value
    with pytest.raises(ConfigError) as error:
        check_raw_config(paper)
    assert shown in str(error.value)


# ---------------------------------------------------------------- feature caches
def _copy_features(repa_features, tmp_path, edit=None) -> Path:
    out = tmp_path / "features"
    shutil.copytree(repa_features, out)
    if edit:
        for split in ("train", "val"):
            meta = json.loads((out / f"{split}.json").read_text())
            edit(meta)
            (out / f"{split}.json").write_text(json.dumps(meta))
    return out


def test_another_teachers_feature_cache_is_refused_before_training(data_dir, repa_features, tmp_path):
    """minilm's features copied over another teacher's: today that cell would train against minilm's."""
    copied = _copy_features(repa_features, tmp_path, lambda m: m.update(teacher="e5-pt"))
    with pytest.raises(DataError, match=r"(?s)train\.npy: these cached features do not belong here: it holds the "
                                        r"features of teacher 'e5-pt', not of 'minilm'.*--forcerun"):
        train_cell(tiny_config(), REPA_CELL, data_dir, tmp_path / "run", copied)
    assert not (tmp_path / "run" / "checkpoint").exists() and not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("change", [{"layer": 3}, {"pooling": "cls"}, {"max_length": 32}, {"text_prefix": "query: "},
                                    {"revision": "v2"}])
def test_a_feature_cache_of_the_same_teacher_configured_otherwise_is_refused(data_dir, repa_features, tmp_path,
                                                                             change):
    cfg = tiny_config()
    teacher = {k: v for k, v in cfg.teacher("minilm").__dict__.items() if v is not None}
    cfg = tiny_config(repa={"teachers": [{**teacher, **change}]})
    with pytest.raises(DataError, match="configured otherwise than when they were computed"):
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features)


def test_a_speed_setting_of_the_teacher_does_not_invalidate_its_cache(data_dir, repa_features, tmp_path):
    cfg = tiny_config()
    teacher = {k: v for k, v in cfg.teacher("minilm").__dict__.items() if v is not None}
    cfg = tiny_config(repa={"teachers": [{**teacher, "batch_size": 3}]})
    assert train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features)["steps"] == cfg.train.steps


def test_a_cache_written_before_caches_recorded_their_teacher_is_checked_on_what_it_has(data_dir, repa_features,
                                                                                          tmp_path):
    def old_format(meta):
        for key in ("teacher_sha256", "alignment", "revision"):
            meta.pop(key)
        meta["layer"] = 3

    copied = _copy_features(repa_features, tmp_path, old_format)
    with pytest.raises(DataError, match=r"computed with layer = 3; repa.teachers\[minilm\].layer is -1"):
        train_cell(tiny_config(), REPA_CELL, data_dir, tmp_path / "run", copied)


def test_a_token_wise_cache_is_not_read_as_pooled_features(data_dir, repa_features, tmp_path):
    copied = _copy_features(repa_features, tmp_path, lambda m: m.update(alignment="token"))
    with pytest.raises(DataError, match="holds token features; this run aligns pooled ones"):
        train_cell(tiny_config(), REPA_CELL, data_dir, tmp_path / "run", copied)


def test_the_feature_probe_refuses_another_teachers_cache(repa_features, tmp_path):
    from repa_mdlm.analysis.feature_probe import load_probe_features

    copied = _copy_features(repa_features, tmp_path, lambda m: m.update(teacher="minilm-twin"))
    assert load_probe_features(repa_features / "val.npy", teacher="minilm").shape[0] > 0
    with pytest.raises(DataError, match="not of 'minilm'"):
        load_probe_features(copied / "val.npy", teacher="minilm")


# ---------------------------------------------------------------- the teacher's depth
def test_a_teacher_layer_beyond_the_teachers_depth_is_refused_before_any_feature(data_dir, tokenizer, tmp_path):
    from repa_mdlm.teachers.teacher import Teacher

    teacher = {k: v for k, v in tiny_config().teacher("minilm").__dict__.items() if v is not None}
    for layer in (99, -99):
        # built directly: the planning check (a local config.json) would refuse it first; a hub teacher's
        # depth is known only once the feature job has loaded it
        cfg = TeacherConfig(**{**teacher, "layer": layer})
        with pytest.raises(ConfigError, match=rf"repa.teachers\[minilm\].layer = {layer}: .* has \d+ blocks"):
            Teacher(cfg, tokenizer)


def test_a_cell_name_beside_another_cells_spec_is_refused_before_training(data_dir, repa_features, tmp_path):
    """`repa-mdlm train --spec <w0.75's spec> --cell minilm_L2_w0.50_s0` would train 0.5 and record 0.75."""
    cfg = Config.from_dict(cell_spec(tiny_config(repa={"weights": [0.75]}), Cell("minilm", 2, 0.75, 0)),
                           job_spec=True)
    with pytest.raises(ConfigError, match=r"cell minilm_L2_w0.50_s0 is not in this config's grid"):
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features)
    assert not (tmp_path / "run").exists()


def test_a_second_trainer_on_a_live_cell_gets_one_line_not_a_traceback(data_dir, tmp_path, capsys):
    from repa_mdlm.training.trainer import _RunLock
    from repa_mdlm.workflow.cli import main

    cfg, cell = tiny_config(), Cell("baseline", None, None, 0)
    with _RunLock(tmp_path / "run"):
        code = main(["train", "--spec", json.dumps(cell_spec(cfg, cell)), "--cell", cell.name, "--data", str(data_dir),
                     "--run-dir", str(tmp_path / "run"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "another process is training this cell" in err and "kill -TERM" in err


def test_status_says_whether_a_checkpoint_will_be_resumed_or_set_aside(data_dir, repa_features, tmp_path):
    from repa_mdlm.workflow.status import _resume_outlook

    cfg = tiny_config()
    with pytest.raises(Preempted):
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "run", repa_features, stop_at_step=4)
    state = tmp_path / "run" / "checkpoint" / "state.json"
    assert _resume_outlook(cfg, REPA_CELL, state) == "Snakemake resumes it from its checkpoint"
    assert "sets it aside under superseded/" in _resume_outlook(tiny_config(train={"lr": 1e-3}), REPA_CELL, state)


# ---------------------------------------------------------------- a moved sweep
def _demo_at(results_dir: Path, **teacher_change) -> Config:
    import yaml

    from ..conftest import REPO

    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["results_dir"] = str(results_dir)
    for teacher in raw["repa"]["teachers"]:
        if teacher.get("init_from_config"):
            teacher["init_from_config"] = {**teacher["init_from_config"], **teacher_change}
    return check_raw_config(raw)


def test_what_a_built_teachers_cell_and_cache_vouch_for_does_not_depend_on_where_the_sweep_lies(tmp_path):
    """A teacher the workflow builds lives inside results_dir: a sweep moved or copied elsewhere must keep
    its checkpoints, its feature caches and its finished cells (it once re-trained every REPA cell)."""
    from repa_mdlm.config.specs import vouched_cell_spec
    from repa_mdlm.teachers.teacher import teacher_identity

    here, moved = _demo_at(tmp_path / "a"), _demo_at(tmp_path / "b")
    built = next(t for t in here.repa.teachers if t.init_from_config)
    cell = next(c for c in here.cells() if c.teacher == built.name)
    assert cell_spec(here, cell) != cell_spec(moved, cell)  # the folder is in Snakemake's params, as before
    assert vouched_cell_spec(here, cell) == vouched_cell_spec(moved, cell)
    assert teacher_identity(here.teacher(built.name), 32) == teacher_identity(moved.teacher(built.name), 32)
    # what the teacher is still counts: another architecture is another cell and another cache
    other = _demo_at(tmp_path / "a", intermediate_size=2 * built.init_from_config["intermediate_size"])
    assert vouched_cell_spec(other, cell) != vouched_cell_spec(here, cell)
    assert teacher_identity(other.teacher(built.name), 32) != teacher_identity(here.teacher(built.name), 32)
    # a teacher in a folder of the user's is that folder
    hub = TeacherConfig(name="local", name_or_path=str(tmp_path / "a" / "model"))
    assert teacher_identity(hub, 32) != teacher_identity(TeacherConfig(name="local", name_or_path=str(tmp_path / "b")), 32)
