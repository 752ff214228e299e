"""The student tokenizer, tokenize-and-pack, the token arrays and their manifest, the text of
packed sequences, the batch order, and the read-ahead that loads batches.

The corpus's documents (`corpus.iter_documents`), each in the split its hash gives, are joined with
EOS and cut into fixed-length sequences. Each split is a raw little-endian uint32 file of shape
[sequences, seq_len] with a manifest holding counts and checksums.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from ..config import ConfigError, CorpusConfig, TokenizerConfig
from ..io import (
    DataError,
    atomic_write_json,
    changed_files,
    file_sha256,
    folder_checksums,
    fsync_rename,
    rebuild_command,
)
from ..layout import MANIFEST
from .checks import MaskFreeDocuments, mask_in_text, mask_token_problem, shortfall_error
from .corpus import iter_documents, split_of

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TOKEN_DTYPE = np.dtype("<u4")


# ---------------------------------------------------------------- tokenizer
def prepare_tokenizer(tok_cfg: TokenizerConfig, corpus: CorpusConfig, out_dir: str | os.PathLike,
                      base_dir: str | os.PathLike = ".") -> Path:
    """Load the student tokenizer (hub id / local dir) or train a byte-level BPE; add the mask token."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if tok_cfg.train_vocab_size:
        train = (d for d in iter_documents(corpus, base_dir)
                 if split_of(d, corpus.val_permille, corpus.test_permille) == "train")
        docs = MaskFreeDocuments(train, tok_cfg.mask_token)
        tokenizer = train_bpe_tokenizer(docs, tok_cfg, limit=corpus.tokenizer_training_documents)
        docs.check()
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_cfg.name_or_path, trust_remote_code=False,
                                                      revision=tok_cfg.revision)
        except Exception as e:
            raise ConfigError(
                f"tokenizer.name_or_path = {tok_cfg.name_or_path!r} could not be loaded: {e}\n"
                "Offline? Download it on a machine with internet (`hf download "
                f"{tok_cfg.name_or_path}`) and point tokenizer.name_or_path at that directory."
            ) from e
        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            raise ConfigError(f"tokenizer.name_or_path = {tok_cfg.name_or_path!r}: a fast tokenizer is required")
    if tokenizer.eos_token is None:
        tokenizer.add_special_tokens({"eos_token": tok_cfg.eos_token})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Qwen tokenizers have no mask token: add an explicit one (Qwen2.5 has spare embedding rows).
    problem = mask_token_problem(tokenizer, tok_cfg.mask_token)
    if problem:
        raise ConfigError(f"tokenizer.mask_token = {tok_cfg.mask_token!r}: {problem}; the mask must be a new special "
                          "token that no text is made of: choose another (e.g. '<|mask|>')")
    if tok_cfg.mask_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"mask_token": tok_cfg.mask_token})
    else:
        tokenizer.mask_token = tok_cfg.mask_token
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tokenizer.save_pretrained(tmp)
    fsync_rename(tmp, out_dir)
    return out_dir


def train_bpe_tokenizer(docs, tok_cfg: TokenizerConfig, limit: int):
    """A byte-level BPE (GPT-2/Qwen style) trained on the corpus, with eos and mask tokens."""
    import itertools

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tok_cfg.train_vocab_size,
        special_tokens=[tok_cfg.eos_token, tok_cfg.mask_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(itertools.islice(docs, limit), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=tok_cfg.eos_token,
                                   pad_token=tok_cfg.eos_token, mask_token=tok_cfg.mask_token)


def load_tokenizer(tokenizer_dir: str | os.PathLike, verify: bool = True):
    """The student tokenizer of a data folder. verify: its files against the checksums that the
    token arrays' manifest beside it recorded (manifests written before they were recorded: not checked)."""
    from transformers import AutoTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    manifest_path = tokenizer_dir.parent / MANIFEST
    if verify and tokenizer_dir.name == "tokenizer" and manifest_path.exists():
        changed = changed_files(tokenizer_dir, json.loads(manifest_path.read_text()).get("tokenizer_files"))
        if changed:
            raise DataError(f"{changed[0]}: the tokenizer differs from the one the token arrays were "
                            f"made with (corrupt or replaced); rebuild both with "
                            f"{rebuild_command(manifest_path, 'tokenizer')}")
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if tok.mask_token_id is None or tok.eos_token_id is None:
        raise ConfigError(f"{tokenizer_dir}: tokenizer without mask or eos token; rebuild it (and the token arrays "
                          f"made with it) with {rebuild_command(Path(tokenizer_dir).parent / MANIFEST, 'tokenizer')}")
    return tok


def packed_documents(row: np.ndarray, eos: int) -> list[list[int]]:
    """The documents of one packed sequence: end-of-text tokens separate them (a document cut at
    either end of the sequence is kept, possibly empty)."""
    row = np.asarray(row)
    return [piece[piece != eos].tolist() for piece in np.split(row, np.flatnonzero(row == eos))]


def sequence_texts(tokenizer, ids: np.ndarray) -> list[str]:
    """Text of packed sequences for a teacher with its own tokenizer: documents stay apart, and the
    text is exactly what the tokenizer decodes."""
    docs = (packed_documents(row, tokenizer.eos_token_id) for row in np.asarray(ids))
    return ["\n\n".join(text for text in map(tokenizer.decode, row_docs) if text) for row_docs in docs]


def readable_texts(tokenizer, ids: np.ndarray) -> list[str]:
    """Text of packed sequences for a reader (samples): each document stripped, a blank line between."""
    docs = (packed_documents(row, tokenizer.eos_token_id) for row in np.asarray(ids))
    return ["\n\n".join(tokenizer.decode(d).strip() for d in row_docs if d).strip() for row_docs in docs]


# ---------------------------------------------------------------- tokenize and pack
def tokenize_and_pack(corpus: CorpusConfig, tokenizer_dir: str | os.PathLike, seq_len: int,
                      out_dir: str | os.PathLike, base_dir: str | os.PathLike = ".",
                      doc_batch: int = 512, test_only: bool = False) -> dict:
    """Stream documents, tokenize, pack per split until each token budget is met. test_only: a
    zero-shot set, every document a test document (corpus.test_tokens is the budget)."""
    from tqdm import tqdm

    tokenizer = load_tokenizer(tokenizer_dir, verify=False)  # a manifest beside it is the previous run's
    eos = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = ("test",) if test_only else SPLITS
    budgets = {"train": corpus.train_tokens, "val": corpus.val_tokens, "test": corpus.test_tokens}
    target_seqs = {s: max(1, budgets[s] // seq_len) for s in splits}
    writers = {s: _PackedWriter(out_dir / f"{s}.bin", seq_len, target_seqs[s]) for s in splits}
    pending: dict[str, list[str]] = {s: [] for s in splits}
    bar = tqdm(total=sum(target_seqs.values()), unit="seq", desc="tokenize", mininterval=5)

    def flush(split: str) -> None:
        docs, pending[split] = pending[split], []
        before = writers[split].sequences
        # split_special_tokens: a document that spells "<|mask|>" or "<|endoftext|>" is read as that text,
        # never as the mask or a document break (a web corpus has such documents; one must not stop the job)
        encoded = tokenizer(docs, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        for text, ids in zip(docs, encoded):
            if tokenizer.mask_token_id in ids:  # an ordinary token the mask was made of: text would be masked
                _discard(writers)
                raise ConfigError(mask_in_text(tokenizer.mask_token, text, f"a {split} document"))
            writers[split].add(ids + [eos])
        bar.update(writers[split].sequences - before)

    for text in iter_documents(corpus, base_dir):
        split = "test" if test_only else split_of(text, corpus.val_permille, corpus.test_permille)
        if writers[split].full:
            if all(w.full for w in writers.values()):
                break
            continue
        pending[split].append(text)
        if len(pending[split]) >= doc_batch:
            flush(split)
    for split in splits:
        if pending[split] and not writers[split].full:
            flush(split)
    bar.close()

    manifest = {
        "seq_len": seq_len,
        "dtype": TOKEN_DTYPE.str,
        "eos_token_id": eos,
        "mask_token_id": tokenizer.mask_token_id,
        "tokenizer_size": len(tokenizer),
        "tokenizer_files": folder_checksums(tokenizer_dir),
        "corpus": {"source": corpus.source, **({"name": corpus.name, "subset": corpus.subset, "split": corpus.split}
                                                  if corpus.source == "huggingface" else {}),
                   **({"paths": corpus.paths} if corpus.source == "local" else {})},
        "splits": {},
    }
    short = shortfall_error(corpus, {s: w.sequences for s, w in writers.items()}, target_seqs, seq_len, test_only)
    if short:
        _discard(writers)
        raise ConfigError(short)
    for split, writer in writers.items():
        info = writer.close()
        if info["sequences"] < target_seqs[split]:
            log.warning("%s: corpus exhausted at %d of %d sequences", split, info["sequences"], target_seqs[split])
        manifest["splits"][split] = info
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def _discard(writers: dict) -> None:
    for writer in writers.values():
        writer.discard()


class _PackedWriter:
    """Appends token ids and writes full sequences to `<path>.tmp`; renamed on close."""

    def __init__(self, path: Path, seq_len: int, max_sequences: int):
        self.path, self.seq_len, self.max_sequences = path, seq_len, max_sequences
        self.tmp = path.with_name(path.name + ".tmp")
        self.file = open(self.tmp, "wb")
        self.buffer: list[int] = []
        self.sequences = 0
        self.documents = 0
        self.hash = hashlib.sha256()

    @property
    def full(self) -> bool:
        return self.sequences >= self.max_sequences

    def add(self, ids: list[int]) -> None:
        if self.full:
            return
        self.documents += 1
        self.buffer.extend(ids)
        n = min(len(self.buffer) // self.seq_len, self.max_sequences - self.sequences)
        if n:
            chunk = np.asarray(self.buffer[: n * self.seq_len], dtype=TOKEN_DTYPE).tobytes()
            self.file.write(chunk)
            self.hash.update(chunk)
            del self.buffer[: n * self.seq_len]
            self.sequences += n
        if self.full:
            self.buffer.clear()  # the rest of the document is dropped, never split across runs

    def discard(self) -> None:
        """Drop what was written (nothing is renamed into place)."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def close(self) -> dict:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        fsync_rename(self.tmp, self.path)
        return {"file": self.path.name, "sequences": self.sequences, "tokens": self.sequences * self.seq_len,
                "documents": self.documents, "sha256": self.hash.hexdigest()}


# ---------------------------------------------------------------- reading
def read_manifest(data_dir: str | os.PathLike) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path} is missing; rebuild the token arrays with `snakemake {path}`")
    return json.loads(path.read_text())


def open_split(data_dir: str | os.PathLike, split: str, verify: bool = False) -> np.ndarray:
    """Memory-map a split as [sequences, seq_len] uint32, checking its size (and checksum)."""
    manifest = read_manifest(data_dir)
    info = manifest["splits"][split]
    path = Path(data_dir) / info["file"]
    expected = info["sequences"] * manifest["seq_len"] * TOKEN_DTYPE.itemsize
    if not path.exists() or path.stat().st_size != expected:
        raise DataError(
            f"{path}: size {path.stat().st_size if path.exists() else 'missing'} != {expected} from the manifest; "
            f"the file is truncated or stale; rebuild the token arrays with "
            f"{rebuild_command(Path(data_dir) / MANIFEST, 'tokenize')}")
    if verify and file_sha256(path) != info["sha256"]:
        raise DataError(f"{path}: checksum differs from the manifest (corrupt); rebuild the token arrays with "
                        f"{rebuild_command(Path(data_dir) / MANIFEST, 'tokenize')}")
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", shape=(info["sequences"], manifest["seq_len"]))


def unigram_perplexity(data_dir: str | os.PathLike) -> dict:
    """The no-context reference: perplexity on the test split of token frequencies counted on
    the train split (add-one smoothing over the tokenizer's vocabulary, the mask token excluded).
    An MDLM that has learned nothing beyond frequencies sits here."""
    manifest = read_manifest(data_dir)
    vocab = int(manifest["tokenizer_size"])
    train, test = open_split(data_dir, "train", verify=True), open_split(data_dir, "test", verify=True)
    counts = np.bincount(np.asarray(train).ravel(), minlength=vocab).astype(np.float64)
    counts[manifest["mask_token_id"]] = 0.0
    probs = (counts + 1.0) / (counts.sum() + vocab - 1)
    test_ids = np.asarray(test).ravel()
    nll = float(-np.log(probs[test_ids]).mean())
    return {"unigram_ppl": math.exp(nll), "unigram_nelbo": nll, "train_tokens": int(train.size),
            "test_tokens": int(test_ids.size), "vocabulary": vocab}


def batch_indices(n_sequences: int, step: int, global_batch: int, data_seed: int) -> np.ndarray:
    """Sequence ids of the global batch at `step`: a fresh permutation each epoch.

    A pure function of (step, seed), so a resumed run, or any number of ranks, reads
    exactly the same data in the same order.
    """
    per_epoch = n_sequences // global_batch
    if per_epoch == 0:
        raise ConfigError(f"train split has {n_sequences} sequences, fewer than train.global_batch = {global_batch}")
    epoch, offset = divmod(step, per_epoch)
    perm = _epoch_permutation(n_sequences, data_seed, epoch)
    return np.sort(perm[offset * global_batch:(offset + 1) * global_batch])


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n_sequences: int, data_seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([data_seed, epoch]).permutation(n_sequences)


# ---------------------------------------------------------------- read-ahead
class Prefetcher:
    """Loads the batches of the next `depth` steps on a background thread while the current
    step computes: the memory-mapped gather, the int64 copy and (on CUDA) pinning, so the
    host-to-device copy can be asynchronous. `load(step)` must be a pure function of the
    step; batches come back exactly as a synchronous loop would have made them.
    """

    def __init__(self, load, depth: int, pin_memory: bool = False, stop: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.load, self.depth, self.pin_memory, self.stop = load, depth, pin_memory, stop
        self.pending: dict = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if depth > 0 else None

    def _load(self, step: int):
        batch = self.load(step)
        if self.pin_memory:
            batch = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in batch.items()}
        return batch

    def get(self, step: int):
        if self.pool is None:
            return self._load(step)
        last = step + self.depth if self.stop is None else max(step, min(step + self.depth, self.stop - 1))
        for ahead in range(step, last + 1):
            if ahead not in self.pending:
                self.pending[ahead] = self.pool.submit(self._load, ahead)
        for stale in [s for s in self.pending if s < step]:  # e.g. after a skipped step
            self.pending.pop(stale).cancel()
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            for future in self.pending.values():
                future.cancel()
            self.pool.shutdown(wait=True)
            self.pending.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
