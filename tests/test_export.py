"""`repa-mdlm export`: a trained cell as a folder that loads and samples on its own, copied anywhere."""

from __future__ import annotations

import shutil

import pytest

from repa_mdlm.config import Cell
from repa_mdlm.io import DataError
from repa_mdlm.workflow.cli import main

from .conftest import tiny_config


@pytest.fixture(scope="module")
def exported(data_dir, tmp_path_factory):
    from repa_mdlm.evaluation.perplexity import evaluate_run
    from repa_mdlm.io import atomic_write_checked_json
    from repa_mdlm.training.trainer import train_cell

    results = tmp_path_factory.mktemp("results")
    cfg = tiny_config(train={"steps": 4, "log_every": 2, "val_every": 4})
    cell = Cell("baseline", None, None, 0)
    run = results / "runs" / cell.name
    train_cell(cfg, cell, data_dir, run)
    atomic_write_checked_json(run / "metrics.json", evaluate_run(cfg, cell, run, data_dir))
    out = results / "exported"
    assert main(["export", "--run-dir", str(run), "--out-dir", str(out), "--data", str(data_dir)]) == 0
    return run, out


def test_exported_folder_loads_and_samples_alone(exported, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repa_mdlm.evaluation.sampler import generate
    from repa_mdlm.model.student import load_student

    _, out = exported
    copy = tmp_path / "elsewhere" / "cell"
    shutil.copytree(out, copy)  # nothing refers back to the results folder
    tokenizer = AutoTokenizer.from_pretrained(str(copy))
    model = AutoModelForCausalLM.from_pretrained(str(copy))
    assert tokenizer.mask_token is not None and tokenizer.mask_token_id == model.config.mask_token_id
    assert model.config.is_causal is False
    texts = generate(model, tokenizer, n_samples=2, seq_len=16, steps=4, seed=0)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert generate(load_student(copy), tokenizer, n_samples=2, seq_len=16, steps=4, seed=0) == texts


def test_model_card(exported):
    _, out = exported
    card = (out / "README.md").read_text()
    for part in ("# baseline_s0", "## Training", "## Metrics", "95 % interval", "## Provenance", "commit",
                 "## Load and sample", "AutoModelForCausalLM.from_pretrained", "repa_mdlm.evaluation.sampler import generate",
                 "hf upload", "## Config", "seq_len: 32"):
        assert part in card, part
    assert {"config.yaml", "train_summary.json", "metrics.json", "config.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()}


def test_export_refuses_a_non_empty_folder_and_a_changed_model(exported, tmp_path, data_dir):
    from repa_mdlm.workflow.export import export_cell

    run, out = exported
    with pytest.raises(FileExistsError):
        export_cell(run, out, data_dir)
    broken = tmp_path / "runs" / "baseline_s0"
    shutil.copytree(run, broken)
    (broken / "model" / "config.json").write_text("{}")
    with pytest.raises(DataError, match="differs"):
        export_cell(broken, tmp_path / "x", data_dir)
    assert not (tmp_path / "x").exists()
