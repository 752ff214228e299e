"""Training-step benchmark: tokens/s, MFU, peak memory, a per-phase breakdown, REPA overhead
per teacher (cached and online, side by side in one run) and teacher-cache throughput.

    repa-mdlm benchmark --size demo --steps 5 --compile --demo-dag
    repa-mdlm benchmark --size paper --teachers all --compile backbone blocks --sweep 32 64 128 256 --append docs/benchmarks.md

Models are built from config with random init (no download): the paper's student and
the teachers' published architectures. This is a benchmark, not a test: it prints a
table and, with --append, adds it to docs/benchmarks.md with date, device and versions.
Each row is also printed as soon as it is measured, so a run cut short keeps what it measured.

MFU = model FLOPs per second / the GPU's datasheet dense bf16 peak (989 TFLOP/s for an H100 or
H200 SXM; PEAK_BF16_TFLOPS). Model FLOPs per token are the usual count, 6 x (non-embedding
parameters + the full LM head) + 12 x layers x d_model x seq_len for attention (3.03 GFLOP at
the paper's size). Training sends only masked positions through the head, so it executes fewer
FLOPs than that (2.62 GFLOP at the mean mask rate 1/2 without the curriculum); the table gives
those executed TFLOP/s too. MFU therefore overstates how busy the chip is, by 16 % here (25 % with
the paper's curriculum, which masks less).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import StudentConfig, TeacherConfig
from .data import Prefetcher, batch_indices
from .diffusion import (
    HEAD_CHUNK_ROWS,
    chunked_weighted_nll,
    corrupt,
    masked_head_nelbo,
    masked_positions,
    masked_token_nll,
    nelbo_per_sequence,
    sample_t,
)
from .model import backbone_hidden, build_student, count_parameters, output_embedding
from .repa import Projection, alignment_loss, pool_student
from .teachers import FeatureCache, feature_bits

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
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200 NVL": 835.0, "H200": 989.0,
                    "A100": 312.0}
"""Datasheet dense bf16 TFLOP/s, the MFU denominator; the first name found in the device's name wins."""

SIZES = {
    "demo": dict(student=StudentConfig(vocab_size=2048, hidden_size=64, intermediate_size=192, num_hidden_layers=4,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                       rope_theta=10000.0),
                 seq_len=128, global_batch=16, micro_batch=16, tokenizer_size=2048, layer=2,
                 teachers=["tiny-bert"]),
    "paper": dict(student=StudentConfig(), seq_len=256, global_batch=512, micro_batch=64, tokenizer_size=151666,
                  layer=17, teachers=list(TEACHER_ARCHS)[:6]),
}
PHASES = ("data", "forward", "head+loss", "repa", "backward", "optimizer")
OPTIONAL_ROWS = ("read-ahead", "heads", "eager-attention", "checkpointing", "online", "drift")


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


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_teacher(name: str, device):
    from transformers import AutoConfig, AutoModel

    spec = dict(TEACHER_ARCHS[name])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):  # random init on the device itself: seconds, not a minute, for 1.7 B
        return AutoModel.from_config(config, dtype=dtype).eval().requires_grad_(False)


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


def batch_loader(s: Setup, features: FeatureCache | None):
    def load(step_index: int) -> dict:  # what Trainer.load_batch does: a gather from the memmaps
        rows = batch_indices(len(s.tokens), step_index, s.global_batch, data_seed=0)
        batch = {"x0": torch.from_numpy(np.asarray(s.tokens[rows], dtype=np.int64))}
        if features is not None:
            batch["targets"] = features[rows]
        return batch
    return load


def step(s: Setup, timer: PhaseTimer, step_index: int, prefetch: Prefetcher, repa: str | None = None,
         teacher=None, projection=None, head: str = "chunked") -> None:
    """One optimizer step, phase by phase. repa: None | 'cached' | 'online'.
    head: 'chunked' (what training runs: masked rows only, fused chunked loss and gradient),
    'masked' (masked rows, plain autograd), 'full' (every position through the head)."""
    B, mb = s.global_batch, s.micro_batch
    with timer("data"):  # waiting for the read-ahead thread, and the copy to the device
        batch = prefetch.get(step_index)
        x0_all = batch["x0"].to(s.device, non_blocking=True)
        targets_all = batch["targets"].to(s.device, non_blocking=True) if "targets" in batch else None
        gen = torch.Generator(device=s.device).manual_seed(step_index)
        t_all = sample_t(B, 1e-3, gen, device=s.device)
        x_t_all, masked_all = corrupt(x0_all, t_all, s.model.config.mask_token_id, 1e-3, gen)
        positions = masked_positions(masked_all, mb) if head == "chunked" else None  # as Trainer.train_step
    for k, start in enumerate(range(0, B, mb)):
        sl = slice(start, start + mb)
        x0, t, x_t, masked = x0_all[sl], t_all[sl], x_t_all[sl], masked_all[sl]
        with timer("forward"), autocast(s.device):
            hidden, layer_hidden = backbone_hidden(s.model, x_t, s.layer if repa else None)
        with timer("head+loss"), autocast(s.device):
            mask_id, emb = s.model.config.mask_token_id, output_embedding(s.model)
            if head == "chunked":  # what training runs
                total, _ = masked_head_nelbo(hidden, x0, t, positions[k], emb, mask_id)
                loss = total / B
            else:
                if head == "full":  # the unoptimised reference: every position through the head
                    nll = masked_token_nll(hidden.flatten(0, 1), emb, x0.flatten(), mask_id)[masked.flatten()]
                else:
                    nll = masked_token_nll(hidden[masked], emb, x0[masked], mask_id)
                loss = nelbo_per_sequence(nll, masked, t).sum() / B
        if repa:
            with timer("repa"):
                if repa == "online":
                    with torch.no_grad(), autocast(s.device):
                        ids = teacher_inputs(teacher, mb, s.seq_len, torch.Generator().manual_seed(start)).to(s.device)
                        target = teacher(input_ids=ids).last_hidden_state.float().mean(1)
                else:
                    target = targets_all[sl]
                with autocast(s.device):
                    loss = loss + alignment_loss(projection(pool_student(layer_hidden)), target) * (mb / B)
        with timer("backward"):
            loss.backward()
    with timer("optimizer"):
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), 1.0)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)


def flops_per_token(model, seq_len: int, head_fraction: float = 1.0) -> float:
    """Training FLOPs per token: 6 x parameters + attention. head_fraction = 1 is the model count
    (every position through the LM head); the mean mask rate gives what masked-only training executes."""
    cfg = model.config
    n = count_parameters(model, exclude_embeddings=True) + head_fraction * output_embedding(model).numel()
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


MEAN_MASK_RATE = 0.5
"""E[(1 - eps) t] for t ~ U[eps, 1], as the benchmark draws it (no curriculum): the share of
positions that go through the LM head."""


def peak_tflops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def matmul_tflops(device, n: int = 8192, repeats: int = 20) -> float | None:
    """The bf16 matmul rate this device really sustains (n^3 GEMMs on random data): the ceiling
    to read MFU against, beside the datasheet peak."""
    if device.type != "cuda":
        return None
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


def run_config(s: Setup, steps: int, warmup: int, **kw) -> dict:
    """One variant on its own: median step time of `steps` steps after `warmup`."""
    return run_interleaved(s, steps, warmup, {"only": kw})["only"]


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
        prefetchers = {name: stack.enter_context(Prefetcher(batch_loader(s, kw.get("features")), s.prefetch_batches,
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


def sweep_micro_batches(s: Setup, micro_batches: list[int], steps: int, warmup: int) -> list[dict]:
    """Baseline step at each micro-batch size, with and without activation checkpointing;
    a size that does not fit in device memory is reported as such."""
    results = []
    for mb in micro_batches:
        for checkpointing in (False, True):
            if s.global_batch % mb:
                continue
            if checkpointing:
                s.model.activation_checkpointing_enable({"use_reentrant": False})
            try:
                r = run_config(dataclasses.replace(s, micro_batch=mb), steps, warmup)
            except torch.OutOfMemoryError:
                r = None
            finally:
                s.optimizer.zero_grad(set_to_none=True)
                if checkpointing:
                    s.model.activation_checkpointing_disable()
                if s.device.type == "cuda":
                    torch.cuda.empty_cache()
            results.append({"micro_batch": mb, "checkpointing": checkpointing, "result": r})
    return results


def demo_dag_wall_time(repo: Path) -> float:
    """Wall time of the whole offline demo DAG (`snakemake --profile profiles/demo`) in a scratch
    results folder, so the user's results/ are never touched."""
    import subprocess

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="repa-mdlm-demo-") as scratch:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "all", "--profile", "profiles/demo", "--nolock",
                        "--config", f"results_dir={scratch}/demo"], cwd=repo, check=True, env=env,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - began


class PeakMemory:
    """Peak memory of a block: the CUDA allocator's on GPU; on Linux CPUs the process's peak
    resident set (VmHWM, reset through /proc/self/clear_refs), above what was resident before."""

    def __init__(self, device):
        self.device, self.gib = device, None

    @staticmethod
    def _status_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.before = self._status_kib("VmRSS") * 1024
            except OSError:
                self.before = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.gib = (torch.cuda.max_memory_allocated() - self.before) / 2**30
        elif self.before is not None:
            self.gib = (self._status_kib("VmHWM") * 1024 - self.before) / 2**30


def head_benchmark(rows: int, hidden_size: int, vocab: int, device, repeats: int = 2,
                   chunk_rows: int = HEAD_CHUNK_ROWS) -> list[dict]:
    """The LM head and SUBS loss alone, forward and backward, at the given sizes: `rows` masked
    positions into a `vocab`-wide head. 'full' also sends the unmasked positions (as many
    again at the mean masking rate 1/2) through the head."""
    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    weight = (torch.randn(vocab, hidden_size, generator=gen) * 0.02).to(device, dtype).requires_grad_()
    hidden_all = torch.randn(2 * rows, hidden_size, generator=gen).to(device, dtype).requires_grad_()
    targets = torch.randint(0, vocab - 1, (2 * rows,), generator=gen).to(device)
    weights = torch.rand(2 * rows, generator=gen).to(device)
    is_masked = torch.arange(2 * rows, device=device) % 2 == 0
    results = []
    for name in ("full", "masked", "chunked"):
        times, peak = [], 0.0
        for _ in range(repeats + 1):  # the first is a warm-up
            with PeakMemory(device) as memory:
                began = time.perf_counter()
                if name == "chunked":
                    loss, _ = chunked_weighted_nll(hidden_all[is_masked], weight, targets[is_masked],
                                                   weights[is_masked], vocab - 1, chunk_rows)
                else:
                    h, y, w = ((hidden_all, targets, weights) if name == "full" else
                               (hidden_all[is_masked], targets[is_masked], weights[is_masked]))
                    nll = masked_token_nll(h, weight, y, vocab - 1)
                    loss = (nll * w)[is_masked].sum() if name == "full" else (nll * w).sum()
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - began)
            peak = max(peak, memory.gib or 0.0)
            weight.grad = hidden_all.grad = None
        results.append({"head": name, "s": statistics.median(times[1:]), "peak_gib": peak if memory.gib is not None else None})
    return results


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
    with torch.no_grad(), autocast(device):
        teacher(input_ids=teacher_inputs(teacher, batch, seq_len, gen).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            teacher(input_ids=teacher_inputs(teacher, batch, seq_len, gen).to(device)).last_hidden_state.mean(1).cpu()
    return batches * batch / (time.perf_counter() - start)


def run_head_benchmark(a, device) -> list[dict]:
    size = SIZES[a.head_size or a.size]
    return head_benchmark(a.head_rows, size["student"].hidden_size, size["tokenizer_size"], device,
                          chunk_rows=a.head_chunk_rows)


def head_table(head: list[dict], a) -> list[str]:
    size = SIZES[a.head_size or a.size]
    lines = ["", f"LM head + SUBS loss alone, forward and backward: {a.head_rows:,} masked rows (and as many "
             f"unmasked for 'full'), d = {size['student'].hidden_size}, vocab {size['tokenizer_size']:,} "
             f"({a.head_size or a.size} sizes), chunks of {a.head_chunk_rows:,} rows:", "",
             "| head | time (s) | vs full | peak memory above start (GiB) |", "|---|---:|---:|---:|"]
    for h in head:
        memory = "n/a" if h["peak_gib"] is None else f"{h['peak_gib']:.2f}"
        lines.append(f"| {h['head']} | {h['s']:.3f} | {head[0]['s'] / h['s']:.2f}x faster | {memory} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="repa-mdlm benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="demo")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--global-batch", type=int)
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--teachers", nargs="+", help=f"architectures from {list(TEACHER_ARCHS)}, 'all' or 'none'")
    p.add_argument("--optimizer", choices=["adamw8bit", "adamw"], default="adamw8bit")
    p.add_argument("--compile", nargs="*", choices=["backbone", "blocks"],
                   help="add a row per train.compile mode (bare --compile: backbone), with its compile time")
    p.add_argument("--skip", nargs="+", default=[], choices=OPTIONAL_ROWS,
                   help="leave these rows out (e.g. to fit a short GPU loan)")
    p.add_argument("--teacher-batch-sizes", type=int, nargs="+", default=[TeacherConfig.batch_size],
                   metavar="N", help="teacher-cache throughput at these batch sizes (teacher.batch_size)")
    p.add_argument("--cache-only", nargs="+", default=[], metavar="TEACHER",
                   help="teachers whose cache pass alone is timed (no REPA steps)")
    p.add_argument("--compile-only", action="store_true",
                   help="only the --compile rows: no baseline, teachers or optional rows")
    p.add_argument("--sweep", type=int, nargs="+", metavar="MICRO_BATCH",
                   help="also time the baseline at these micro-batch sizes, with and without activation "
                        "checkpointing, to choose train.micro_batch for the card")
    p.add_argument("--demo-dag", action="store_true",
                   help="also time the whole offline demo DAG (snakemake --profile profiles/demo, scratch results)")
    p.add_argument("--head-rows", type=int, default=0, metavar="ROWS",
                   help="also time the LM head + loss alone (full, masked, chunked) at this many masked rows "
                        "and the size's d and vocab, with peak memory")
    p.add_argument("--head-size", choices=SIZES, help="model sizes for --head-rows (default: --size)")
    p.add_argument("--head-chunk-rows", type=int, default=HEAD_CHUNK_ROWS,
                   help="rows per chunk of the chunked head in --head-rows (training uses the default)")
    p.add_argument("--head-only", action="store_true", help="run only the --head-rows comparison")
    p.add_argument("--threads", type=int)
    p.add_argument("--append", help="append the result table to this Markdown file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    size = SIZES[a.size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    teachers = size["teachers"] if not a.teachers or a.teachers == ["default"] else (
        list(TEACHER_ARCHS)[:6] if a.teachers == ["all"] else [] if a.teachers == ["none"] else a.teachers)
    unknown = [t for t in teachers + a.cache_only if t not in TEACHER_ARCHS]
    if unknown:
        p.error(f"--teachers: unknown {unknown}; choose from {list(TEACHER_ARCHS)} or 'all'")
    seq_len = size["seq_len"]
    B = a.global_batch or size["global_batch"]
    mb = a.micro_batch or min(size["micro_batch"], B)
    if B % mb:
        p.error(f"--global-batch {B} is not a multiple of --micro-batch {mb}")
    if a.head_only:
        if not a.head_rows:
            p.error("--head-only needs --head-rows")
        device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
        text = "\n".join([f"### {datetime.date.today().isoformat()} · {device_name} · LM head alone",
                          "", f"torch {torch.__version__}; command: `repa-mdlm benchmark "
                          f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
                          *head_table(run_head_benchmark(a, device), a)]) + "\n"
        print(text)
        if a.append:
            with open(a.append, "a") as f:
                f.write("\n" + text)
        return 0
    from .config import Config
    from .train import compile_backbone, make_optimizer

    cfg = Config()
    cfg.train.optimizer = a.optimizer

    def new_student(**student_overrides):
        student = dataclasses.replace(size["student"], **student_overrides)
        model = build_student(student, size["tokenizer_size"], size["tokenizer_size"] - 1, 0, seed=0)
        optimizer, optimizer_name = make_optimizer(cfg, list(model.to(device).parameters()))
        return model, optimizer, optimizer_name

    model, optimizer, optimizer_name = new_student()
    scratch = Path(tempfile.mkdtemp(prefix="repa-mdlm-benchmark-"))
    n_sequences = max(4 * B, 64)
    tokens = np.lib.format.open_memmap(scratch / "tokens.npy", mode="w+", dtype=np.uint32, shape=(n_sequences, seq_len))
    tokens[:] = np.random.default_rng(0).integers(1, size["tokenizer_size"] - 1, tokens.shape, dtype=np.uint32)
    tokens.flush()
    s = Setup(model, optimizer, seq_len, B, mb, size["layer"], device, np.load(scratch / "tokens.npy", mmap_mode="r"))

    # first: a failing demo stops the benchmark before the long part, and it gets an idle machine
    demo_s = demo_dag_wall_time(Path(__file__).resolve().parents[2]) if a.demo_dag else None
    rows = []

    def measured(name: str, result: dict) -> dict:
        rows.append((name, result))
        memory = f", peak {result['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in result else ""
        print(f"measured: {name}: step {result['step_s']:.3f} s, {result['tokens_per_s']:,.0f} tokens/s{memory}; "
              f"first step (with any compile) {result['first_step_s']:.1f} s", flush=True)
        return result

    if a.compile_only:  # only the compile rows (a short GPU loan gives them a stage of their own)
        a.skip, teachers, a.sweep, a.head_rows = list(OPTIONAL_ROWS), [], None, 0
        base = None
    else:
        run_config(s, 1, max(5, a.warmup))  # settle the allocator, thread pools and clocks first
        base = measured("baseline", run_config(s, a.steps, a.warmup))
    no_read_ahead = unchunked = full = None
    if "read-ahead" not in a.skip:
        no_read_ahead = measured("baseline, no read-ahead",
                                 run_config(dataclasses.replace(s, prefetch_batches=0), a.steps, a.warmup))
    if "heads" not in a.skip:
        unchunked = measured("baseline, masked head unchunked", run_config(s, a.steps, a.warmup, head="masked"))
        full = measured("baseline, full LM head", run_config(s, a.steps, a.warmup, head="full"))
    if "eager-attention" not in a.skip:
        e_model, e_optimizer, _ = new_student(attn_implementation="eager")  # a materialised [L, L] mask
        measured("baseline, eager attention",
                 run_config(dataclasses.replace(s, model=e_model, optimizer=e_optimizer), a.steps, a.warmup))
        del e_model, e_optimizer
    if "checkpointing" not in a.skip:
        model.activation_checkpointing_enable({"use_reentrant": False})
        measured("baseline, activation checkpointing", run_config(s, a.steps, a.warmup))
        model.activation_checkpointing_disable()
    cache_rate, paired = {}, {}
    for name in teachers:
        teacher = make_teacher(name, device)
        dim = teacher.config.hidden_size
        projection = Projection(size["student"].hidden_size, dim).to(device)
        optimizer.add_param_group({"params": list(projection.parameters())})
        features = write_feature_cache(scratch, n_sequences, dim)
        variants = {"baseline": {}, "cached": {"features": features, "repa": "cached", "projection": projection}}
        if "online" not in a.skip:
            variants["online"] = {"repa": "online", "teacher": teacher, "projection": projection}
        paired[name] = run_interleaved(s, a.steps, a.warmup, variants)
        for mode in variants.keys() - {"baseline"}:
            measured(f"{name} {mode}", paired[name][mode])
        optimizer.param_groups.pop()
        del teacher
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for name in teachers + [t for t in a.cache_only if t not in teachers]:
        teacher = make_teacher(name, device)
        cache_rate[name] = {batch: teacher_cache_throughput(teacher, batch, seq_len, device)
                            for batch in a.teacher_batch_sizes}
        print(f"measured: {name} cache pass, sequences/s by teacher.batch_size: "
              + ", ".join(f"{batch}: {'out of memory' if rate is None else f'{rate:,.0f}'}"
                          for batch, rate in cache_rate[name].items()), flush=True)
        del teacher
        if device.type == "cuda":
            torch.cuda.empty_cache()
    again = None
    if "drift" not in a.skip:
        again = measured("baseline, again (drift check)", run_config(s, a.steps, a.warmup))
    # the ratios' baseline: the faster of the first and last runs (noise only ever adds time)
    steady = min(base, again or base, key=lambda r: r["step_s"]) if base else None
    reference = steady["step_s"] if steady else None
    sweep = sweep_micro_batches(s, a.sweep, a.steps, a.warmup) if a.sweep else []
    head = run_head_benchmark(a, device) if a.head_rows else []
    # last: inductor's compile workers would otherwise share the CPU with the other rows
    compiled = {}
    for mode in ([] if a.compile is None else a.compile or ["backbone"]):
        c_model, c_optimizer, _ = new_student()
        compile_backbone(c_model, scratch / "compile-cache", mode)
        compiled[mode] = measured(f"baseline, torch.compile {mode}",
                                  run_config(dataclasses.replace(s, model=c_model, optimizer=c_optimizer), a.steps,
                                             max(a.warmup, 2)))  # the second call is still slow on CPU
        del c_model, c_optimizer

    fpt = flops_per_token(model, seq_len)
    executed_fpt = flops_per_token(model, seq_len, head_fraction=MEAN_MASK_RATE)
    peak = peak_tflops(device)
    matmul = matmul_tflops(device)
    on_gpu = device.type == "cuda"
    device_name = torch.cuda.get_device_name() if on_gpu else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    def mfu(r):
        return f"{100 * r['tokens_per_s'] * fpt / (peak * 1e12):.1f} %" if peak else "n/a"

    def executed_tflops(r):
        return f"{r['tokens_per_s'] * executed_fpt / 1e12:.1f}"

    import transformers

    lines = [
        f"### {datetime.date.today().isoformat()} · {device_name} · size={a.size} · seq {seq_len} · "
        f"batch {B} (micro {mb}) · {optimizer_name}",
        "",
        f"torch {torch.__version__}, transformers {transformers.__version__}; command: "
        f"`repa-mdlm benchmark {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"Student: {count_parameters(model) / 1e6:.1f} M parameters; {fpt / 1e6:,.1f} MFLOP per token by the model "
        f"count (6N with the full head + attention), {executed_fpt / 1e6:,.1f} executed (head on the masked "
        f"{MEAN_MASK_RATE:.0%} of positions). MFU = model FLOP/s / {peak or 'n/a'} TFLOP/s (datasheet dense bf16)"
        + (f"; an 8192^3 bf16 matmul ran at {matmul:.0f} TFLOP/s here." if matmul else ".")
        + " The chunked head computes its gradient in the head+loss phase; the other heads' backward is in backward.",
        "",
        "| run | step (s) | tokens/s | MFU | executed TFLOP/s | vs baseline | "
        + " | ".join(f"{ph} (ms)" for ph in PHASES) + (" | peak mem (GiB)" if on_gpu else "") + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(PHASES) + ("---:|" if on_gpu else ""),
    ]
    for name, r in rows:
        cells = [name, f"{r['step_s']:.3f}", f"{r['tokens_per_s']:,.0f}", mfu(r), executed_tflops(r),
                 f"{r['step_s'] / reference:.3f}x" if reference else "n/a"]
        cells += [f"{1000 * r['phases'][ph]:.1f}" for ph in PHASES]
        if on_gpu:
            cells.append(f"{r['peak_mem_gib']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")

    def head_time(r):  # the head's forward, plus its backward where autograd runs it
        return r["phases"]["head+loss"] + r["phases"]["backward"] - steady["phases"]["backward"]

    lines.append("")
    if unchunked and full:
        head_ratio = unchunked["phases"]["head+loss"] / full["phases"]["head+loss"]
        lines += [f"- Masked-only LM head vs full head: {1 / head_ratio:.2f}x faster on the head's forward "
                  "(both plain autograd).",
                  f"- Chunked fused head vs plain masked head: {unchunked['step_s'] / steady['step_s']:.2f}x on the "
                  f"whole step; head forward+backward {1000 * steady['phases']['head+loss']:.1f} ms vs "
                  f"{1000 * head_time(unchunked):.1f} ms."]
    eager_attention = next((r for n, r in rows if n == "baseline, eager attention"), None)
    if eager_attention:
        lines.append(f"- SDPA without a materialised mask vs eager attention: "
                     f"{eager_attention['step_s'] / steady['step_s']:.2f}x on the whole step.")
    if no_read_ahead:
        lines.append(f"- Read-ahead: data phase {1000 * steady['phases']['data']:.1f} ms per step with it, "
                     f"{1000 * no_read_ahead['phases']['data']:.1f} ms without.")
    for mode, r in compiled.items():
        speed = f"{reference / r['step_s']:.2f}x the eager step's speed; " if reference else ""
        lines.append(f"- torch.compile {mode}: {speed}the first step (compile included) took "
                     f"{r['first_step_s']:.1f} s.")
    for name, rates_by_batch in cache_rate.items():
        rates = ", ".join("out of memory" if rate is None else f"{rate:,.0f}" for rate in rates_by_batch.values())
        cache = (f"cache pass {rates} sequences/s at teacher.batch_size {', '.join(map(str, rates_by_batch))}")
        if name not in paired:
            lines.append(f"- {name}: {cache}.")
            continue
        p_run = paired[name]
        overheads = ", ".join(f"{100 * (paired_ratio(p_run[mode], p_run['baseline']) - 1):+.1f} % {mode}"
                              for mode in ("cached", "online") if mode in p_run)
        lines.append(f"- {name}: REPA overhead {overheads} (median of {a.steps} step-by-step ratios to a baseline "
                     f"step interleaved with them); {cache}.")
    if again:
        lines.append(f"- The table's ratios are to the faster of the first and last baseline runs, which differ by "
                     f"{100 * abs(again['step_s'] / base['step_s'] - 1):.1f} %: differences below that are drift. "
                     "The REPA overheads above are paired, and so less exposed to it.")
    if head:
        lines += head_table(head, a)
    if demo_s is not None:
        lines.append(f"- Offline demo DAG (`snakemake --profile profiles/demo`, from nothing): "
                     f"{int(demo_s // 60)} min {demo_s % 60:.0f} s.")
    if sweep:
        lines += ["", "Micro-batch sweep (baseline step, global batch fixed):", "",
                  "| micro batch | activation checkpointing | step (s) | tokens/s | MFU |"
                  + (" peak mem (GiB) |" if on_gpu else ""),
                  "|---:|---|---:|---:|---:|" + ("---:|" if on_gpu else "")]
        for entry in sweep:
            r = entry["result"]
            head = f"| {entry['micro_batch']} | {'on' if entry['checkpointing'] else 'off'} | "
            if r is None:
                lines.append(head + "out of memory | | |" + (" |" if on_gpu else ""))
            else:
                lines.append(head + f"{r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | {mfu(r)} |"
                             + (f" {r['peak_mem_gib']:.1f} |" if on_gpu else ""))
        fits = [e for e in sweep if e["result"] is not None]
        if fits:
            best = min(fits, key=lambda e: e["result"]["step_s"])
            lines.append(f"\nFastest: train.micro_batch = {best['micro_batch']}, train.activation_checkpointing = "
                         f"{str(best['checkpointing']).lower()}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
