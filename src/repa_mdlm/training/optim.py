"""The optimizer and its schedule: the learning rate at a step, the optimizer a config names (bitsandbytes'
8-bit AdamW or torch's), and torch.compile of the backbone. The trainer, the benchmark and the GPU check use
these, so each times the same step."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..config import Config, ConfigError


def learning_rate(cfg: Config, step: int) -> float:
    tc = cfg.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "cosine":
        progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
        return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return tc.lr


def optimizer_class(cfg: Config) -> tuple[type[torch.optim.Optimizer], str]:
    """The optimizer the config names, and nothing else: the paper's 8-bit AdamW never silently
    becomes another optimizer (other numerics, 3 GB more memory) because a build is missing.
    Called before the model is built, so a job without bitsandbytes stops within seconds."""
    if cfg.train.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit, "bitsandbytes.AdamW8bit"
        except Exception as e:  # no usable bitsandbytes build on this machine
            raise ConfigError(
                f"train.optimizer = adamw8bit needs bitsandbytes, which failed to load here ({type(e).__name__}: "
                f"{e}). Install a bitsandbytes build for torch {torch.__version__} (`pip install bitsandbytes`), "
                "or set train.optimizer: adamw to train with torch's 32-bit AdamW instead (another optimizer, "
                "so every cell re-runs).") from e
    return torch.optim.AdamW, "torch.AdamW"


def make_optimizer(cfg: Config, params: list[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, str]:
    tc = cfg.train
    cls, name = optimizer_class(cfg)
    return cls(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay), name


def compile_backbone(model, cache_dir: Path, mode: str = "backbone") -> None:
    """torch.compile the transformer in place: "backbone", the whole stack as one graph, or "blocks",
    each block on its own (one graph reused by every block: a short cold compile). Parameter names are
    unchanged, so checkpoints stay interchangeable. Inductor's on-disk caches make every later process
    on the same shapes skip most of the compile; $TORCHINDUCTOR_CACHE_DIR overrides the place."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve())
    if mode == "blocks":
        for block in model.model.layers:
            block.compile(dynamic=False)
    elif mode == "backbone":
        model.model.compile(dynamic=False)
    else:
        raise ValueError(f"compile mode {mode!r}: choose backbone or blocks")
