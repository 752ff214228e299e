"""Timing the trainer's step for the benchmark: the step runs `objective.Objective`, the very
noise draw and micro-batch loss `Trainer.train_step` runs, with a timer around each phase; the
teachers' published architectures at random init; REPA variants measured side by side.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Cell, Config
from ..data.dataset import Prefetcher
from ..model.diffusion import masked_token_nll, nelbo_per_sequence
from ..model.student import autocast_context
from ..teachers.built import random_teacher
from ..teachers.teacher import FeatureCache, feature_bits, teacher_dtype
from ..training.objective import Objective, chunked_head, gather_batch

# Published architectures (random init here; timing only).
TEACHER_ARCHS = {
    "qwen3-0.6b": dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-1.7b": dict(model_type="qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    "bertimbau": dict(model_type="bert", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, vocab_size=29794, max_position_embeddings=512),
    "robertacrawlpt": dict(model_type="roberta", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, vocab_size=50265, max_position_embeddings=514),
    "tiny-bert": dict(model_type="bert", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, vocab_size=2048, max_position_embeddings=512),
}
# Foreign tokenizers cut Portuguese finer than Qwen's BPE; the demo measured ~1.3x.
TEXT_TOKEN_RATIO = {"bert": 1.3, "roberta": 1.3}
PHASES = ("data", "forward", "head+loss", "repa", "backward", "optimizer")


@dataclass
class Setup:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    seq_len: int
    global_batch: int
    micro_batch: int
    layer: int
    device: torch.device
    tokens: np.ndarray  # memory-mapped [sequences, seq_len] uint32, as training reads them
    prefetch_batches: int = 2
    config: Config = field(default_factory=Config)  # the diffusion and optimizer settings training would use


class PhaseTimer:
    def __init__(self, device):
        self.device, self.totals = device, {p: 0.0 for p in PHASES}

    @contextlib.contextmanager
    def __call__(self, phase):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.totals[phase] += time.perf_counter() - start


def published_teacher(name: str, device: torch.device):
    """A teacher of TEACHER_ARCHS at random init, frozen, built on the device in its precision."""
    return random_teacher(TEACHER_ARCHS[name], device=device, dtype=teacher_dtype(device)).eval().requires_grad_(False)


def teacher_inputs(teacher, batch: int, seq_len: int, generator) -> torch.Tensor:
    length = min(int(seq_len * TEXT_TOKEN_RATIO.get(teacher.config.model_type, 1.0)),
                 getattr(teacher.config, "max_position_embeddings", 10**9) - 2)
    return torch.randint(5, teacher.config.vocab_size, (batch, length), generator=generator)


def write_feature_cache(folder: Path, sequences: int, dim: int) -> FeatureCache:
    """Random features in the training cache's format (bf16 bits, memory-mapped)."""
    values = torch.from_numpy(np.random.default_rng(1).standard_normal((sequences, dim)).astype(np.float32))
    path = folder / f"features-{dim}.npy"
    np.save(path, feature_bits(values))
    (folder / f"features-{dim}.json").write_text(json.dumps({"sequences": sequences, "dim": dim,
                                                             "tokens_sha256": None, "sha256": None}))
    return FeatureCache(path, verify=False)


def masked_head(hidden, x0, t, masked, positions, embedding, mask_token_id) -> torch.Tensor:
    """The masked rows through the LM head with plain autograd (no chunks, no fused gradient)."""
    nll = masked_token_nll(hidden[masked], embedding, x0[masked], mask_token_id)
    return nelbo_per_sequence(nll, masked, t).sum()


def full_head(hidden, x0, t, masked, positions, embedding, mask_token_id) -> torch.Tensor:
    """The unoptimised reference: every position through the LM head."""
    nll = masked_token_nll(hidden.flatten(0, 1), embedding, x0.flatten(), mask_token_id)[masked.flatten()]
    return nelbo_per_sequence(nll, masked, t).sum()


HEADS = {"chunked": chunked_head, "masked": masked_head, "full": full_head}


def step(s: Setup, timer: PhaseTimer, step_index: int, prefetch: Prefetcher, repa: str | None = None,
         teacher=None, projection=None, head: str = "chunked") -> None:
    """One optimizer step of the trainer's objective, phase by phase. repa: None | 'cached' | 'online'
    (a REPA cell at the size's layer, weight 1). head: 'chunked' (what training runs: masked rows only,
    fused chunked loss and gradient), 'masked' (masked rows, plain autograd), 'full' (every position
    through the head)."""
    cell = Cell("benchmark", s.layer, 1.0, 0) if repa else Cell("baseline", None, None, 0)
    objective = Objective.of(s.config, cell, s.model, projection, s.micro_batch, s.global_batch)
    with timer("data"):  # waiting for the read-ahead thread, the copy to the device and the noise draw
        batch = prefetch.get(step_index)
        x0 = batch["x0"].to(s.device, non_blocking=True)
        targets = batch["targets"].to(s.device, non_blocking=True) if "targets" in batch else None
        noisy = objective.draw_noise(x0, step_index)
    for k, sl in enumerate(objective.micro_batches(noisy)):
        target = None
        if repa == "online":
            with timer("repa"), torch.no_grad(), autocast_context(s.device, s.config.train.precision):
                ids = teacher_inputs(teacher, s.micro_batch, s.seq_len, torch.Generator().manual_seed(sl.start))
                target = teacher(input_ids=ids.to(s.device)).last_hidden_state.float().mean(1)
        elif repa:
            target = targets[sl]
        objective.backward(noisy, k, target, phase=timer, head=HEADS[head])
    with timer("optimizer"):
        params = [p for group in s.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, s.config.train.grad_clip or float("inf"))
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)


def _loader(s: Setup, features: FeatureCache | None):
    """What Trainer.load_batch does: the global batch gathered from the memory-mapped tokens."""
    return lambda step_index: gather_batch(s.tokens, step_index, s.global_batch, 0, features)


def run_interleaved(s: Setup, steps: int, warmup: int, variants: dict[str, dict]) -> dict[str, dict]:
    """Variants measured side by side: step i of each runs back to back, so slow drift of the
    machine hits them alike. Each result also holds its per-step times; `paired_ratio` of two
    results is the median of their step-by-step ratios; first_step_s is the first warm-up
    step's time, which holds any compile."""
    timers = {name: PhaseTimer(s.device) for name in variants}
    times = {name: [] for name in variants}
    first = dict.fromkeys(variants)
    peaks = dict.fromkeys(variants, 0.0)
    with contextlib.ExitStack() as stack:
        prefetchers = {name: stack.enter_context(Prefetcher(_loader(s, kw.get("features")), s.prefetch_batches,
                                                            pin_memory=s.device.type == "cuda", stop=warmup + steps))
                       for name, kw in variants.items()}
        for i in range(warmup + steps):
            for name, kw in variants.items():
                kw = {k: v for k, v in kw.items() if k != "features"}
                timer = timers[name] if i >= warmup else PhaseTimer(s.device)
                if s.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                before, began = sum(timer.totals.values()), time.perf_counter()
                step(s, timer, i, prefetchers[name], **kw)
                if i == 0:
                    first[name] = time.perf_counter() - began
                if i >= warmup:
                    times[name].append(sum(timer.totals.values()) - before)
                    if s.device.type == "cuda":
                        peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**30)
    out = {}
    for name in variants:
        step_s = statistics.median(times[name])
        out[name] = {"step_s": step_s, "tokens_per_s": s.global_batch * s.seq_len / step_s, "times": times[name],
                     "first_step_s": first[name], "phases": {p: v / steps for p, v in timers[name].totals.items()}}
        if s.device.type == "cuda":
            out[name]["peak_mem_gib"] = peaks[name]
    return out


def paired_ratio(a: dict, b: dict) -> float:
    return statistics.median(x / y for x, y in zip(a["times"], b["times"]))


def teacher_cache_throughput(teacher, batch: int, seq_len: int, device, batches: int = 3) -> float | None:
    """Sequences/s of a feature-cache pass (bf16 on GPU) at teacher.batch_size = `batch`, pooled
    features copied to the host; None if that batch does not fit on the device."""
    try:
        return _teacher_cache_throughput(teacher, batch, seq_len, device, batches)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def _teacher_cache_throughput(teacher, batch: int, seq_len: int, device, batches: int) -> float:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), autocast_context(device, "bf16"):
        teacher(input_ids=teacher_inputs(teacher, batch, seq_len, gen).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            teacher(input_ids=teacher_inputs(teacher, batch, seq_len, gen).to(device)).last_hidden_state.mean(1).cpu()
    return batches * batch / (time.perf_counter() - start)
