"""Token-wise teacher features: a teacher's states averaged within each span of characters that it and
the student cut alike (teachers/spans.py), online (encode_spans, every step) and cached (compute_span_cache:
one bf16 row per span in sequence order, each position's span beside it, a manifest with both checksums
and the share of positions left out of the loss). A cell reads either as SpanTargets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..io import DataError, atomic_write_json, file_sha256, fsync_rename
from ..model.repa import SpanTargets, span_mean
from .spans import SPAN_MAP_VERSION, identity_span_map, span_map, student_text
from .teacher import (
    FEATURE_ALIGNMENT,
    FEATURE_STORAGE,
    WINDOW_BATCHES,
    FeatureCache,
    Teacher,
    feature_bits,
    round_features,
    teacher_identity,
)


# ---------------------------------------------------------------- online
def span_encodings(teacher: Teacher, x0: np.ndarray) -> tuple[list[dict], list]:
    """Unpadded teacher inputs of clean student sequences, and each one's SpanMap."""
    rows = np.asarray(x0, dtype=np.int64)
    if teacher.uses_student_ids:
        return [{"input_ids": row} for row in rows], [identity_span_map(row, teacher.token_bytes) for row in rows]
    if not getattr(teacher.tokenizer, "is_fast", False):
        raise ConfigError(f"repa.teachers[{teacher.cfg.name}]: token-wise alignment needs the teacher's character "
                          "offsets, which only a fast (Rust) tokenizer gives; this one is slow. Use a teacher with a "
                          "tokenizer.json, or repa.alignment: pooled for it")
    texts = [student_text(row, teacher.token_bytes, teacher.student_tokenizer.eos_token_id, teacher.cfg.text_prefix)
             for row in rows]
    encoded = teacher.tokenizer([t.text for t in texts], truncation=True, max_length=teacher.cfg.max_length,
                                return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")
    maps = [span_map(t.starts, t.ends, offsets[i], truncated=bool(encoded.encodings[i].overflowing))
            for i, t in enumerate(texts)]
    return [{key: values[i] for key, values in encoded.items()} for i in range(len(texts))], maps


@torch.no_grad()
def encode_span_inputs(teacher: Teacher, inputs: dict[str, torch.Tensor], maps: list) -> SpanTargets:
    """Span features (float32, bf16-rounded) of padded teacher inputs, with the student's span ids."""
    inputs = {k: v.to(teacher.device) for k, v in inputs.items()}
    hidden = teacher.hidden_states(inputs).float()
    first = np.cumsum([0] + [m.spans for m in maps])
    teacher_ids = torch.full(hidden.shape[:2], -1, dtype=torch.long)
    real = inputs["attention_mask"].bool().cpu()
    for i, m in enumerate(maps):  # a row's real tokens in order, whatever the padding side
        teacher_ids[i, real[i]] = torch.from_numpy(np.where(m.teacher >= 0, m.teacher + first[i], -1))
    features = round_features(span_mean(hidden, teacher_ids.to(teacher.device), int(first[-1]))).cpu()
    student_ids = np.stack([np.where(m.student >= 0, m.student + first[i], -1) for i, m in enumerate(maps)])
    return SpanTargets(features, torch.from_numpy(student_ids))


def encode_spans(teacher: Teacher, x0: np.ndarray | torch.Tensor) -> SpanTargets:
    """Token-wise targets of clean student sequences (the online mode's and the cache's)."""
    if isinstance(x0, torch.Tensor):
        x0 = x0.cpu().numpy()
    encodings, maps = span_encodings(teacher, x0)
    return encode_span_inputs(teacher, teacher.collate(encodings), maps)


# ---------------------------------------------------------------- the cache
def span_map_path(path: str | os.PathLike) -> Path:
    """Beside a span cache's features <split>.npy: <split>.spans.npy, each position's span in its sequence."""
    path = Path(path).with_suffix(".npy")
    return path.with_name(path.stem + ".spans.npy")


def compute_span_cache(teacher: Teacher, tokens: np.ndarray, tokens_sha256: str, out_path: str | os.PathLike,
                       batch_size: int | None = None, started_at: float | None = None) -> dict:
    """Token-wise features of every sequence of a split: `<out>.npy`, one bf16 row per aligned span in
    sequence order; `<out>.spans.npy`, int32 [sequences, seq_len], each position's span within its
    sequence (-1: left out); `<out>.json`, with both checksums and the share of positions left out.
    Two passes: the span maps first (how many rows each sequence has), then the teacher's forwards."""
    from tqdm import tqdm

    began = time.perf_counter() if started_at is None else started_at
    out_path = Path(out_path).with_suffix(".npy")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch_size = batch_size or teacher.cfg.batch_size
    n, seq_len = tokens.shape
    spans_tmp = out_path.with_name(out_path.stem + ".spans.tmp.npy")
    positions = np.lib.format.open_memmap(spans_tmp, mode="w+", dtype=np.int32, shape=(n, seq_len))
    counts = np.zeros(n, dtype=np.int64)
    left_out = {"no_character": 0, "truncated": 0, "unmatched": 0}
    window = WINDOW_BATCHES * batch_size
    for start in tqdm(range(0, n, window), desc=f"span map {teacher.cfg.name}", mininterval=5):
        _, maps = span_encodings(teacher, np.asarray(tokens[start:start + window]))
        for k, m in enumerate(maps):
            positions[start + k] = m.student
            counts[start + k] = m.spans
            for key in left_out:
                left_out[key] += m.left_out[key]
    positions.flush()
    first = np.concatenate([[0], np.cumsum(counts)])
    tmp = out_path.with_name(out_path.stem + ".tmp.npy")
    store = np.lib.format.open_memmap(tmp, mode="w+", dtype=FEATURE_STORAGE, shape=(int(first[-1]), teacher.dim))
    with tqdm(total=n, desc=f"span features {teacher.cfg.name}", unit="seq", mininterval=5) as progress:
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))
            targets = encode_spans(teacher, np.asarray(tokens[rows]))
            if not torch.isfinite(targets.features).all():
                raise FloatingPointError(f"teacher {teacher.cfg.name}: non-finite span features in sequences "
                                         f"{rows[0]}..{rows[-1]}")
            if int(targets.features.shape[0]) != int(first[rows[-1] + 1] - first[rows[0]]):
                raise RuntimeError(f"teacher {teacher.cfg.name}: the span maps of sequences {rows[0]}..{rows[-1]} "
                                   "changed between the two passes (a tokenizer that is not deterministic?)")
            store[first[rows[0]]:first[rows[-1] + 1]] = feature_bits(targets.features)
            progress.update(len(rows))
    store.flush()
    del store, positions
    fsync_rename(spans_tmp, span_map_path(out_path))
    fsync_rename(tmp, out_path)
    total = n * seq_len
    manifest = {
        "teacher": teacher.cfg.name,
        "name_or_path": teacher.cfg.name_or_path,
        "pooling": "span mean",
        "layer": teacher.cfg.layer,
        "input": teacher.input_mode,
        "dim": teacher.dim,
        "sequences": n,
        "spans": int(first[-1]),
        "storage": "bfloat16 bits as uint16, one row per span; spans: int32 span of each position (-1: none)",
        "tokens_sha256": tokens_sha256,
        "revision": teacher.cfg.revision,
        "alignment": "tokenwise",
        "span_map": SPAN_MAP_VERSION,
        "teacher_sha256": teacher_identity(teacher.cfg, seq_len),
        "sha256": file_sha256(out_path),
        "spans_sha256": file_sha256(span_map_path(out_path)),
        "wall_s": time.perf_counter() - began,
        "device": str(teacher.device),
        "positions": total,
        "left_out": left_out,
        "left_out_share": sum(left_out.values()) / max(total, 1),
        "aligned_positions": total - sum(left_out.values()),
    }
    atomic_write_json(out_path.with_suffix(".json"), manifest)
    return manifest


class SpanFeatureCache(FeatureCache):
    """Memory-mapped token-wise features of one teacher and split; indexing gives SpanTargets."""

    alignment = "tokenwise"
    rule = "teacher_span_features"

    def _open_spans(self, path: Path, verify: bool, fix: str) -> None:
        if self.meta.get("span_map") != SPAN_MAP_VERSION:
            raise DataError(f"{path}: its spans were cut by span map version {self.meta.get('span_map')!r}, this "
                            f"code cuts version {SPAN_MAP_VERSION} (teachers/spans.py); {fix}")
        spans = span_map_path(path)
        if not spans.exists():
            raise DataError(f"{spans} is missing beside {path.name}; {fix}")
        if verify and file_sha256(spans) != self.meta.get("spans_sha256"):
            raise DataError(f"{spans}: checksum differs from {path.with_suffix('.json').name}; {fix}")
        self.positions = np.load(spans, mmap_mode="r")
        if self.positions.shape[0] != self.meta["sequences"]:
            raise DataError(f"{spans}: {self.positions.shape[0]} sequences, its manifest says "
                            f"{self.meta['sequences']}; {fix}")
        counts = np.asarray(self.positions).max(axis=1).astype(np.int64) + 1
        self.first = np.concatenate([[0], np.cumsum(counts)])
        if self.first[-1] != self.array.shape[0]:
            raise DataError(f"{spans} numbers {self.first[-1]} spans, {path.name} holds {self.array.shape[0]}; {fix}")

    def __getitem__(self, indices) -> SpanTargets:
        indices = np.atleast_1d(np.arange(len(self.positions))[indices])
        rows = [np.arange(self.first[i], self.first[i + 1]) for i in indices]
        offsets = np.cumsum([0] + [len(r) for r in rows])
        bits = np.ascontiguousarray(self.array[np.concatenate(rows) if rows else []]).view(np.int16)
        local = np.asarray(self.positions[indices], dtype=np.int64)
        ids = np.where(local >= 0, local + offsets[:-1, None], -1)
        return SpanTargets(torch.from_numpy(bits.reshape(-1, self.dim)).view(torch.bfloat16).float(),
                           torch.from_numpy(ids))


def open_feature_cache(path, alignment: str = FEATURE_ALIGNMENT, **kwargs) -> FeatureCache:
    """The cache of an alignment: pooled vectors (FeatureCache) or spans (SpanFeatureCache)."""
    return (SpanFeatureCache if alignment == "tokenwise" else FeatureCache)(path, **kwargs)
