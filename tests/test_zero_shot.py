"""Zero-shot perplexity: another corpus packed as a test set with the student's tokenizer, every cell
scored on it with Table 1's Monte Carlo machinery, a table by teacher; adding a set retrains nothing."""

from __future__ import annotations

import math

import pytest

from repa_mdlm.analysis.beyond import collect_zero_shot
from repa_mdlm.config import Cell, CorpusConfig
from repa_mdlm.config.specs import cell_spec
from repa_mdlm.data.dataset import open_split, tokenize_and_pack
from repa_mdlm.data.synthetic import write_synthetic_corpus
from repa_mdlm.evaluation.perplexity import elbo_summary, zero_shot_run
from repa_mdlm.io import atomic_write_checked_json
from repa_mdlm.reporting.zero_shot_report import zero_shot_report_main, zero_shot_table
from repa_mdlm.training.trainer import train_cell

from .conftest import tiny_config


@pytest.fixture(scope="module")
def zero_shot_set(data_dir, tmp_path_factory):
    texts = write_synthetic_corpus(tmp_path_factory.mktemp("other-text"), documents=60)
    corpus = CorpusConfig(source="local", paths=[str(texts / "*.txt")], test_tokens=16 * 32)
    out = tmp_path_factory.mktemp("zero-shot")
    manifest = tokenize_and_pack(corpus, data_dir / "tokenizer", 32, out, test_only=True)
    return out, manifest


def test_every_document_of_a_zero_shot_corpus_is_test(zero_shot_set):
    out, manifest = zero_shot_set
    assert list(manifest["splits"]) == ["test"] and manifest["splits"]["test"]["sequences"] == 16
    assert open_split(out, "test", verify=True).shape == (16, 32)
    assert not (out / "train.bin").exists()


def test_a_cell_is_scored_on_it_with_table_1s_machinery(data_dir, zero_shot_set, tmp_path):
    out, _ = zero_shot_set
    cfg = tiny_config()
    baseline = Cell("baseline", None, 0.0, 0)
    run = tmp_path / "run"
    train_cell(cfg, baseline, data_dir, run, None)
    result = zero_shot_run(cfg, baseline, run, out, "other")
    assert result["test_set"] == "other" and result["test_tokens"] == 16 * 32
    assert math.isclose(result["test_ppl"], math.exp(result["test_nelbo"]), rel_tol=1e-9)
    from repa_mdlm.training.checkpoint import load_trained_student

    assert result["test_nelbo"] == elbo_summary(cfg, load_trained_student(run)[0], out)["test_nelbo"]  # same draws


def test_adding_a_test_set_retrains_no_cell():
    plain = tiny_config()
    with_set = tiny_config(evaluate={"extra_test_sets": [
        {"name": "other", "corpus": {"source": "local", "paths": ["/nonexistent/*.txt"]}, "optional": True}]})
    cell = Cell("baseline", None, 0.0, 0)
    assert cell_spec(plain, cell) == cell_spec(with_set, cell)
    assert with_set.evaluate.zero_shot_sets() == []  # optional and missing: skipped, not refused


def test_the_table_compares_each_teacher_with_the_baseline_per_set(tmp_path):
    paths = []
    for cell, teacher, ppl in (("baseline_s0", "baseline", 100.0), ("baseline_s1", "baseline", 110.0),
                               ("ta_L2_w0.50_s0", "ta", 90.0), ("ta_L2_w0.50_s1", "ta", 95.0)):
        path = tmp_path / "runs" / cell / "zero_shot" / "other.json"
        path.parent.mkdir(parents=True)
        atomic_write_checked_json(path, {"cell": cell, "teacher": teacher, "layer": 2, "weight": 0.5, "seed": 0,
                                         "test_set": "other", "test_ppl": ppl, "test_nelbo": math.log(ppl),
                                         "test_nelbo_se": 0.01})
        paths.append(str(path))
    t = zero_shot_table(collect_zero_shot(paths)).set_index("teacher")
    assert t.loc["ta", "ppl_change_pct"] == pytest.approx(100 * (92.5 - 105.0) / 105.0)
    written = zero_shot_report_main(paths, tmp_path / "tables")
    assert sorted(p.name for p in written) == ["zero_shot.csv", "zero_shot.html", "zero_shot.md"]
    assert "| other | ta | 2 |" in (tmp_path / "tables" / "zero_shot.md").read_text()
