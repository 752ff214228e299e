"""Teachers: loading (hub id, local dir, or a package's folder), re-tokenization, pooling,
and the feature cache.

A teacher only ever sees the clean sequence x0, so its pooled features depend on the
data alone: they are computed once per teacher and split and shared by all of that
teacher's cells. The online mode (teacher forward each step) runs the same `encode`.

A teacher whose tokenizer differs from the student's gets the *text* of each sequence,
re-tokenized by its own tokenizer; feeding it student ids would index the wrong (or
out-of-range) embeddings.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, TeacherConfig
from ..config.locations import resolve_model_path
from ..data.dataset import Prefetcher, sequence_texts
from ..io import DataError, atomic_write_json, file_sha256, fsync_rename, json_digest, rebuild_command

log = logging.getLogger(__name__)

# Features are stored as bfloat16 bits in uint16 .npy files: full float32 range, half the
# size, and online features are rounded the same way so both modes train identically.
FEATURE_STORAGE = np.uint16


def round_features(features: torch.Tensor) -> torch.Tensor:
    return features.to(torch.bfloat16).float()


def feature_bits(features: torch.Tensor) -> np.ndarray:
    """The stored form: bfloat16 bits as uint16 (FeatureCache reads them back)."""
    return features.to(torch.bfloat16).view(torch.int16).numpy().view(FEATURE_STORAGE)


def teacher_dtype(device: torch.device) -> torch.dtype:
    """A frozen teacher's weights: bfloat16 on a GPU, float32 on a CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def shares_vocabulary(student_tokenizer, teacher_tokenizer) -> bool:
    """True when every student token (but the added mask) has the same id in the teacher."""
    teacher_vocab = teacher_tokenizer.get_vocab()
    mask = student_tokenizer.mask_token
    return all(teacher_vocab.get(tok) == i for tok, i in student_tokenizer.get_vocab().items() if tok != mask)


class Teacher:
    """A frozen encoder or decoder that maps clean sequences to one pooled vector each."""

    def __init__(self, cfg: TeacherConfig, student_tokenizer, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        self.device = torch.device(device)
        self.student_tokenizer = student_tokenizer
        path = resolve_model_path(cfg.name_or_path)
        if cfg.trust_remote_code:
            log.warning("teacher %s: trust_remote_code is ON (opted in by its config entry)", cfg.name)
        if dtype is None:
            dtype = teacher_dtype(self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code,
                                                           revision=cfg.revision)
            self.model = AutoModel.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, dtype=dtype,
                                                   revision=cfg.revision)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"repa.teachers[{cfg.name}].name_or_path = {cfg.name_or_path!r} could not be loaded: {e}\n"
                f"Offline? Download it where there is internet (`hf download {cfg.name_or_path}`) and set "
                "name_or_path to that directory, or set HF_HUB_OFFLINE=1 with a filled HF cache.") from e
        self.model.to(self.device).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.uses_student_ids = shares_vocabulary(student_tokenizer, self.tokenizer)
        text_config = self.model.config.get_text_config()
        self.dim = text_config.hidden_size
        depth = text_config.num_hidden_layers
        if not -(depth + 1) <= cfg.layer <= depth:
            raise ConfigError(
                f"repa.teachers[{cfg.name}].layer = {cfg.layer}: {cfg.name_or_path} has {depth} blocks, so its "
                f"hidden states are 0 (embeddings) to {depth}; choose a layer in 0..{depth}, or -1 for the last")
        # An intermediate layer is read by a hook that stops the forward there, so the blocks
        # above it never run. hidden_states[num_hidden_layers] is not a block output (decoders
        # tie it to last_hidden_state, after the final norm), so the full forward serves it.
        self._stop_block = None
        if 1 <= cfg.layer < text_config.num_hidden_layers:
            blocks = transformer_blocks(self.model, text_config.num_hidden_layers)
            if blocks is None:
                log.warning("teacher %s: no single list of %d blocks found; running all of them for layer %d",
                            cfg.name, text_config.num_hidden_layers, cfg.layer)
            else:
                self._stop_block = blocks[cfg.layer - 1]
        log.info("teacher %s: %s, d=%d, input=%s, pooling=%s, layer=%d", cfg.name, type(self.model).__name__,
                 self.dim, self.input_mode, cfg.pooling, cfg.layer)

    @property
    def input_mode(self) -> str:
        return "student_ids" if self.uses_student_ids else "text"

    def tokenize(self, x0: np.ndarray) -> list[dict]:
        """Unpadded teacher inputs, one dict per sequence: input_ids (and whatever else the
        teacher's tokenizer gives, e.g. token_type_ids), for `collate` to pad into a batch."""
        if self.uses_student_ids:
            return [{"input_ids": row} for row in np.asarray(x0, dtype=np.int64)]
        texts = [self.cfg.text_prefix + text for text in sequence_texts(self.student_tokenizer, x0)]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.cfg.max_length)
        return [{key: values[i] for key, values in encoded.items()} for i in range(len(texts))]

    def collate(self, encodings: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest of these sequences, on the tokenizer's padding side."""
        if self.uses_student_ids:  # rows of a split all have seq_len ids: nothing to pad
            ids = torch.from_numpy(np.stack([e["input_ids"] for e in encodings]))
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return dict(self.tokenizer.pad(encodings, padding=True, return_tensors="pt"))

    def _inputs(self, x0: np.ndarray) -> dict[str, torch.Tensor]:
        return self.collate(self.tokenize(x0))

    @torch.no_grad()
    def encode(self, x0: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Pooled features [B, d_teacher] (float32, bf16-rounded) for clean student sequences."""
        if isinstance(x0, torch.Tensor):
            x0 = x0.cpu().numpy()
        return self.encode_inputs(self._inputs(x0))

    @torch.no_grad()
    def encode_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled features [B, d_teacher] (float32, bf16-rounded) for padded teacher inputs."""
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        hidden = self.hidden_states(inputs)
        return round_features(pool(hidden.float(), inputs["attention_mask"], self.cfg.pooling)).cpu()

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured layer's states [B, T, d_teacher] for padded inputs on the teacher's device."""
        if self._stop_block is not None:
            return self._run_to_block(inputs)
        want_layer = self.cfg.layer != -1
        out = self.model(**inputs, output_hidden_states=want_layer)
        return out.hidden_states[self.cfg.layer] if want_layer else out.last_hidden_state

    # ---- token-wise: features per span of characters (teachers/spans.py)
    @property
    def token_bytes(self) -> list[bytes]:
        if not hasattr(self, "_token_bytes"):
            from .spans import student_token_bytes

            try:
                self._token_bytes = student_token_bytes(self.student_tokenizer)
            except ValueError as e:
                raise ConfigError(f"repa.alignment = tokenwise (teacher {self.cfg.name}): {e}") from None
        return self._token_bytes

    def _run_to_block(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """hidden_states[layer] without running the blocks above it: a hook on block layer-1
        keeps its output and aborts the forward."""
        kept = []

        def keep_and_stop(module, args, output):
            kept.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = self._stop_block.register_forward_hook(keep_and_stop)
        try:
            self.model(**inputs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not kept:
            raise RuntimeError(f"teacher {self.cfg.name}: block {self.cfg.layer - 1} never ran")
        return kept[0]


class _StopForward(Exception):
    """Raised by the early-stop hook once the wanted block has run."""


def transformer_blocks(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList | None:
    """The model's list of transformer blocks (Qwen `layers`, BERT `encoder.layer`, ...): the one
    ModuleList of num_hidden_layers modules; None when there is no single such list."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == num_layers]
    return lists[0] if len(lists) == 1 else None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    mask = attention_mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if how == "cls":
        return hidden[:, 0]
    if how == "last":  # last real token, whatever the padding side
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling = {how!r}: choose mean, cls or last")


# ---------------------------------------------------------------- feature cache
# Sequences are re-tokenized and sorted by length a window of this many batches at a time:
# enough for batches of near-equal lengths, little enough to hold the window's ids.
WINDOW_BATCHES = 64


def length_batches(teacher: Teacher, rows: np.ndarray, batch_size: int):
    """(row indices, padded inputs) batches covering `rows`. Text re-tokenizes to varying
    lengths, so rows are grouped by length and each batch pads only to its own longest;
    student ids all have the same length and keep their order."""
    encodings = teacher.tokenize(rows)
    if teacher.uses_student_ids:
        order = np.arange(len(rows))
    else:  # longest first: a batch that does not fit in memory fails at once
        order = np.argsort([-len(e["input_ids"]) for e in encodings], kind="stable")
    for b in range(0, len(order), batch_size):
        picked = order[b:b + batch_size]
        yield picked, teacher.collate([encodings[i] for i in picked])


def compute_feature_cache(teacher: Teacher, tokens: np.ndarray, tokens_sha256: str, out_path: str | os.PathLike,
                          batch_size: int | None = None, started_at: float | None = None) -> dict:
    """Encode every sequence of a split; write `<out>.npy` (bf16 bits) and `<out>.json` atomically.
    The manifest's wall_s (from `started_at`, e.g. before loading the teacher) is the cache's
    cost, amortised over the teacher's cells in Table 1's second variant."""
    from tqdm import tqdm

    began = time.perf_counter() if started_at is None else started_at
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch_size = batch_size or teacher.cfg.batch_size
    n = tokens.shape[0]
    tmp = out_path.with_name(out_path.name + ".tmp.npy")
    store = np.lib.format.open_memmap(tmp, mode="w+", dtype=FEATURE_STORAGE, shape=(n, teacher.dim))
    real_tokens = padded_tokens = 0
    window = WINDOW_BATCHES * batch_size
    starts = range(0, n, window)

    def tokenized_window(index: int) -> dict:  # on the read-ahead thread, while the teacher runs
        rows = np.asarray(tokens[starts[index]:starts[index] + window])
        return {"rows": len(rows), "batches": list(length_batches(teacher, rows, batch_size))}

    with tqdm(total=n, desc=f"features {teacher.cfg.name}", unit="seq", mininterval=5) as progress, \
            Prefetcher(tokenized_window, depth=1, stop=len(starts)) as prefetch:
        for index, start in enumerate(starts):
            tokenized = prefetch.get(index)
            bits = np.empty((tokenized["rows"], teacher.dim), dtype=FEATURE_STORAGE)
            for picked, inputs in tokenized["batches"]:
                feats = teacher.encode_inputs(inputs)
                if not torch.isfinite(feats).all():
                    bad = start + picked[~torch.isfinite(feats).all(1).numpy()]
                    raise FloatingPointError(f"teacher {teacher.cfg.name}: non-finite features in sequences "
                                             f"{bad[:10].tolist()}")
                bits[picked] = feature_bits(feats)
                real_tokens += int(inputs["attention_mask"].sum())
                padded_tokens += inputs["attention_mask"].numel()
                progress.update(len(picked))
            store[start:start + tokenized["rows"]] = bits
    store.flush()
    del store
    fsync_rename(tmp, out_path.with_suffix(".npy"))
    manifest = {
        "teacher": teacher.cfg.name,
        "name_or_path": teacher.cfg.name_or_path,
        "pooling": teacher.cfg.pooling,
        "layer": teacher.cfg.layer,
        "input": teacher.input_mode,
        "dim": teacher.dim,
        "sequences": n,
        "storage": "bfloat16 bits as uint16",
        "tokens_sha256": tokens_sha256,
        "revision": teacher.cfg.revision,
        "alignment": FEATURE_ALIGNMENT,
        "teacher_sha256": teacher_identity(teacher.cfg, int(tokens.shape[1])),
        "sha256": file_sha256(out_path.with_suffix(".npy")),
        "wall_s": time.perf_counter() - began,
        "device": str(teacher.device),
        "padding_efficiency": real_tokens / max(padded_tokens, 1),
    }
    atomic_write_json(out_path.with_suffix(".json"), manifest)
    return manifest


FEATURE_ALIGNMENT = "pooled"
"""What a cache holds by default: one pooled vector per sequence (compute_span_cache's hold spans)."""
TEACHER_IDENTITY_SKIPS = ("batch_size",)
"""Teacher settings that change the speed of its forward, not its features."""


def teacher_identity(cfg: TeacherConfig, seq_len: int) -> str:
    """The hash a feature cache vouches for: every setting of the teacher that changes its features
    (which model, revision, layer, pooling, input length, text prefix, how it was built) and the
    sequence length; a built teacher's folder is not part of it (specs.vouched_teacher_settings). Keys added
    in later versions are left out at their defaults (specs.spec_dict), so an upgrade keeps existing caches valid."""
    from ..config.specs import vouched_teacher_settings

    settings = {k: v for k, v in vouched_teacher_settings(cfg).items() if k not in TEACHER_IDENTITY_SKIPS}
    return json_digest({"seq_len": seq_len, "teacher": settings})


def feature_cache_mismatch(meta: dict, teacher: TeacherConfig | str, seq_len: int | None,
                           alignment: str = FEATURE_ALIGNMENT) -> str | None:
    """Why a cache's metadata does not vouch for this teacher, or None. A cache written before caches
    recorded their identity is checked on the fields it has (name, model, layer, pooling)."""
    name = teacher if isinstance(teacher, str) else teacher.name
    if meta.get("teacher") != name:
        return f"it holds the features of teacher {meta.get('teacher')!r}, not of {name!r}"
    if meta.get("alignment", FEATURE_ALIGNMENT) != alignment:
        return f"it holds {meta['alignment']} features; this run aligns {alignment} ones"
    if isinstance(teacher, str):
        return None
    if "teacher_sha256" in meta and seq_len is not None:
        if meta["teacher_sha256"] != teacher_identity(teacher, seq_len):
            return (f"teacher {name!r} is configured otherwise than when they were computed (model, revision, "
                    "layer, pooling, max_length, text prefix or build settings, or seq_len)")
        return None
    for key in ("name_or_path", "layer", "pooling"):
        if key in meta and meta[key] != getattr(teacher, key):
            return f"they were computed with {key} = {meta[key]!r}; repa.teachers[{name}].{key} is {getattr(teacher, key)!r}"
    return None


class FeatureCache:
    """Memory-mapped cached features of one teacher and split."""

    alignment = FEATURE_ALIGNMENT
    rule = "teacher_features"
    """The rule that rebuilds this kind of cache (the fix a refusal names)."""

    def __init__(self, path: str | os.PathLike, tokens_sha256: str | None = None, verify: bool = True,
                 teacher: TeacherConfig | str | None = None, seq_len: int | None = None):
        """teacher (and seq_len): the teacher these features must come from, checked against the cache's
        metadata (a name alone checks the name); None checks nothing (synthetic caches)."""
        path = Path(path).with_suffix(".npy")
        meta_path = path.with_suffix(".json")
        fix = f"rebuild them with {rebuild_command(path, self.rule)}"
        if not path.exists() or not meta_path.exists():
            raise DataError(f"{path} or its .json is missing; `snakemake {path}` builds them")
        try:
            self.meta = json.loads(meta_path.read_text())
        except ValueError as e:
            raise DataError(f"{meta_path}: unreadable ({e}); {fix}") from e
        if not isinstance(self.meta, dict):
            raise DataError(f"{meta_path}: not a feature manifest (a JSON object); {fix}")
        mismatch = None if teacher is None else feature_cache_mismatch(self.meta, teacher, seq_len, self.alignment)
        if mismatch:
            raise DataError(f"{path}: these cached features do not belong here: {mismatch}; {fix}")
        if tokens_sha256 is not None and self.meta.get("tokens_sha256") != tokens_sha256:
            raise DataError(f"{path} was computed for other token arrays; {fix}")
        if verify and file_sha256(path) != self.meta["sha256"]:
            raise DataError(f"{path}: checksum differs from {meta_path.name} (truncated or corrupt); {fix}")
        try:
            self.array = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise DataError(f"{path}: not a readable .npy ({e}); {fix}") from e
        if self.array.shape != (self.meta.get("spans", self.meta["sequences"]), self.meta["dim"]):
            raise DataError(f"{path}: shape {self.array.shape} differs from its manifest; {fix}")
        self.dim = self.meta["dim"]
        self._open_spans(path, verify, fix)

    def _open_spans(self, path: Path, verify: bool, fix: str) -> None:
        """Pooled features have no span map."""

    def __getitem__(self, indices) -> torch.Tensor:
        bits = np.ascontiguousarray(self.array[indices]).view(np.int16)
        return torch.from_numpy(bits).view(torch.bfloat16).float()
