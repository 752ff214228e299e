"""The teacher folders the workflow builds itself: a randomly initialised teacher from `init_from_config`
(with the student's tokenizer) and a teacher's random twin (its architecture and tokenizer, fresh weights).
teachers/formats.py converts the ones packages ship."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..config import ConfigError, TeacherConfig
from ..config.locations import resolve_model_path
from ..io import fsync_rename


def random_teacher(init_config: dict, vocab_size: int | None = None, seed: int | None = None,
                   device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                   key: str = "init_from_config"):
    """A randomly initialised teacher from a config: `init_config` holds a `model_type` (qwen3,
    bert, ...) and that architecture's settings. vocab_size: when the config names none; seed:
    torch's seed for the init (None: as it stands); device: built there directly (seconds, not a
    minute, for 1.7 B parameters); dtype: transformers' default when None. `key` names the
    config entry in the error for a missing model_type."""
    from transformers import AutoConfig, AutoModel

    spec = dict(init_config or {})
    model_type = spec.pop("model_type", None)
    if model_type is None:
        raise ConfigError(f"{key} needs a model_type (e.g. qwen3, bert)")
    if vocab_size is not None:
        spec.setdefault("vocab_size", vocab_size)
    config = AutoConfig.for_model(model_type, **spec)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return AutoModel.from_config(config, **({} if dtype is None else {"dtype": dtype}))


def save_teacher(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """A built teacher's model and tokenizer into out_dir, whole or not at all (written beside it, then renamed)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    fsync_rename(tmp, out_dir)
    return out_dir


def build_twin_teacher(twin: TeacherConfig, source: TeacherConfig, out_dir: str | os.PathLike,
                       seed: int = 0) -> Path:
    """Materialise a teacher's random twin: the source's architecture (its config.json) and its own
    tokenizer, with freshly initialised weights (torch seed ``seed``), so that the twin reads the same
    text through the same path and differs only in what the weights learned."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model_path(source.name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=source.trust_remote_code, revision=source.revision)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=source.trust_remote_code,
                                                  revision=source.revision)
    except (OSError, ValueError) as e:
        raise ConfigError(f"repa.teachers[{twin.name}].control_of = {source.name!r}: its model "
                          f"{source.name_or_path!r} could not be read for the twin's architecture: {e}") from e
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, trust_remote_code=source.trust_remote_code)
    return save_teacher(model, tokenizer, out_dir)


def build_random_teacher(cfg: TeacherConfig, student_tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike,
                         seed: int = 0) -> Path:
    """Materialise a teacher from `init_from_config` (random init) with the student's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(student_tokenizer_dir))
    model = random_teacher(cfg.init_from_config, vocab_size=len(tokenizer), seed=seed,
                           key=f"repa.teachers[{cfg.name}].init_from_config")
    return save_teacher(model, tokenizer, out_dir)
