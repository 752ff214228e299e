"""Provenance: every trained cell records what produced it, and the sweep's provenance file (and the
report page) warns when cells mix commits or package versions."""

from __future__ import annotations

import json

import pytest

from repa_mdlm.config import Cell
from repa_mdlm.layout import PROVENANCE, PROVENANCE_FILES
from repa_mdlm.reporting.table1 import aggregate_main
from repa_mdlm.training.provenance import PACKAGES, SLURM_VARIABLES, collect, hub_revisions, sweep_provenance

from .conftest import tiny_config
from .test_aggregate import SYNTH, write_metrics

FIELDS = {"commit", "dirty", "versions", "gpu", "driver", "host", "slurm", "config_sha256", "hub_revisions"}


@pytest.fixture(scope="module")
def trained_run(data_dir, tmp_path_factory):
    from repa_mdlm.training.trainer import train_cell

    run = tmp_path_factory.mktemp("prov") / "runs" / "baseline_s0"
    train_cell(tiny_config(train={"steps": 4, "log_every": 2, "val_every": 4}), Cell("baseline", None, None, 0),
               data_dir, run)
    return run


def test_a_trained_cell_records_its_provenance(trained_run):
    from repa_mdlm.io import read_json_object

    summary = read_json_object(trained_run / "train_summary.json", "summary")
    p = summary[PROVENANCE]
    assert FIELDS <= p.keys()
    assert {"python", "torch", "cuda", "cudnn", *PACKAGES} == p["versions"].keys()
    assert p["versions"]["torch"] and p["versions"]["python"] and p["host"]
    assert p["commit"] is None or len(p["commit"]) == 40
    assert p["dirty"] in (None, True, False)
    # the hash of the run's config.yaml, and every hub input's revision (corpus, tokenizer, teacher; the judge
    # is trained here, name_or_path null, so it has none)
    assert len(p["config_sha256"]) == 64
    assert {"corpus", "tokenizer", "repa.teachers.minilm"} <= p["hub_revisions"].keys()
    assert "generative.judge" not in p["hub_revisions"]


def test_slurm_ids_and_no_gpu_on_cpu(monkeypatch):
    for i, name in enumerate(SLURM_VARIABLES):
        monkeypatch.setenv(name, str(100 + i))
    p = collect()
    assert p["slurm"] == {name: str(100 + i) for i, name in enumerate(SLURM_VARIABLES)}
    assert p["config_sha256"] is None
    import torch

    if not torch.cuda.is_available():
        assert p["gpu"] is None and p["driver"] is None


def test_hub_revisions_of_a_config():
    cfg = tiny_config(tokenizer={"name_or_path": "Qwen/Qwen2.5-0.5B", "revision": "abc123", "train_vocab_size": None})
    found = hub_revisions(cfg.to_dict())
    assert found["tokenizer"] == {"name": "Qwen/Qwen2.5-0.5B", "revision": "abc123"}


def _record(commit: str, transformers: str = "5.0.0", dirty: bool = False) -> dict:
    return {"commit": commit, "dirty": dirty, "versions": {"python": "3.11", "torch": "2.9", "transformers": transformers},
            "gpu": None, "driver": None, "host": "node1", "slurm": {}, "config_sha256": "f" * 64, "hub_revisions": {}}


def test_one_commit_no_warning():
    p = sweep_provenance({"a": _record("1" * 40), "b": _record("1" * 40)})
    assert p["warnings"] == [] and p["commits"] == {"1" * 40: ["a", "b"]}


def test_two_commits_warn_in_the_sweep_file_and_the_report(tmp_path):
    paths = write_metrics(tmp_path, SYNTH)
    commits = ["a" * 40, "b" * 40]
    for i, path in enumerate(paths):
        cell = path.split("/")[-2]
        summary = {"cell": cell, "world_size": 1,
                   PROVENANCE: _record(commits[i % 2], transformers="5.0.0" if i else "4.57.0", dirty=i == 3)}
        (tmp_path / "runs" / cell / "train_summary.json").write_text(json.dumps(summary))
    with pytest.warns(UserWarning):  # SYNTH's cached teacher without feature manifests
        written = aggregate_main(paths, tmp_path / "tables", [])
    assert {p.name for p in written} >= set(PROVENANCE_FILES)
    sweep = json.loads((tmp_path / "tables" / "provenance.json").read_text())
    assert sorted(sweep["commits"]) == ["a" * 40, "b" * 40, "b" * 40 + "+dirty"]
    assert sweep["cells"]["baseline_s1"]["commit"] == "a" * 40
    warnings = " | ".join(sweep["warnings"])
    assert "different commits" in warnings and "uncommitted changes" in warnings and "transformers" in warnings
    md = (tmp_path / "tables" / "provenance.md").read_text()
    page = (tmp_path / "tables" / "provenance.html").read_text()
    assert "**Warning:** cells come from different commits" in md
    assert "cells come from different commits" in page and "class='warn'" in page


def test_no_summaries_no_provenance_files(tmp_path):
    """Table 1 from metrics alone (tests/test_pins.py's fixed metrics) writes exactly the table files."""
    with pytest.warns(UserWarning):
        written = aggregate_main(write_metrics(tmp_path, SYNTH), tmp_path / "tables", [])
    assert not set(PROVENANCE_FILES) & {p.name for p in written}
    assert not (tmp_path / "tables" / "provenance.json").exists()


def test_summaries_without_a_record_are_named(tmp_path):
    paths = write_metrics(tmp_path, SYNTH, world_sizes={m["cell"]: 1 for m in SYNTH})
    with pytest.warns(UserWarning):
        aggregate_main(paths, tmp_path / "tables", [])
    sweep = json.loads((tmp_path / "tables" / "provenance.json").read_text())
    assert "5 cell(s) have no provenance record" in sweep["warnings"][0]
