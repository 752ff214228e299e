"""Hub inputs can be pinned: `revision` (commit, tag or branch) for the teachers, the student
tokenizer and the corpus reaches the loader, and enters a job's spec only when set, so existing
sweeps re-run nothing and a pinned one records its pins."""

import copy

import pytest

from repa_mdlm.config import Cell, ConfigError, CorpusConfig, TeacherConfig, TokenizerConfig
from repa_mdlm.config.specs import cell_spec, data_spec, teacher_spec

from ..conftest import check_raw_config

pytestmark = pytest.mark.faults
PIN = "0123456789abcdef0123456789abcdef01234567"


class Loaded(Exception):
    pass


def capture(calls):
    def loader(*args, **kwargs):
        calls.append(kwargs.get("revision"))
        raise Loaded

    return loader


def test_revisions_reach_every_hub_loader(monkeypatch, tokenizer, tmp_path):
    import datasets
    import transformers

    from repa_mdlm.data.corpus import _iter_huggingface
    from repa_mdlm.data.dataset import prepare_tokenizer
    from repa_mdlm.teachers.teacher import Teacher

    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", capture(calls))
    monkeypatch.setattr(datasets, "load_dataset", capture(calls))
    with pytest.raises((Loaded, ConfigError)):  # the loaders wrap what they cannot load
        Teacher(TeacherConfig(name="qwen3-0.6b", name_or_path="Qwen/Qwen3-0.6B", revision=PIN), tokenizer)
    with pytest.raises((Loaded, ConfigError)):
        prepare_tokenizer(TokenizerConfig(revision="v1.0"), CorpusConfig(), tmp_path / "tok")
    with pytest.raises((Loaded, ConfigError)):
        next(_iter_huggingface(CorpusConfig(revision="refs/convert/parquet")))
    assert calls == [PIN, "v1.0", "refs/convert/parquet"]


def test_a_pin_enters_the_specs_only_when_set(paper):
    plain = check_raw_config(copy.deepcopy(paper))
    cell = Cell("qwen3-0.6b", 3, 0.25, 0)
    assert "revision" not in data_spec(plain)["tokenizer"] and "revision" not in data_spec(plain)["corpus"]
    assert "revision" not in teacher_spec(plain, "qwen3-0.6b")["repa"]["teachers"][0]
    raw = copy.deepcopy(paper)
    raw["tokenizer"]["revision"] = PIN
    raw["corpus"]["revision"] = PIN
    raw["repa"]["teachers"][0]["revision"] = PIN
    pinned = check_raw_config(raw)
    assert data_spec(pinned)["tokenizer"]["revision"] == data_spec(pinned)["corpus"]["revision"] == PIN
    assert cell_spec(pinned, cell)["repa"]["teachers"][0]["revision"] == PIN
    assert cell_spec(pinned, Cell("bertimbau", 3, 0.25, 0)) == cell_spec(plain, Cell("bertimbau", 3, 0.25, 0))
    assert pinned.to_dict()["repa"]["teachers"][0]["revision"] == PIN  # the run's saved config.yaml records it
