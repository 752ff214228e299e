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
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Config, StudentConfig, TeacherConfig
from ..model.diffusion import HEAD_CHUNK_ROWS
from ..model.repa import Projection
from ..model.student import build_student
from .head import run_head_benchmark
from .report import Measured, head_only_report, step_report
from .step import (
    TEACHER_ARCHS,
    Setup,
    published_teacher,
    run_interleaved,
    teacher_cache_throughput,
    write_feature_cache,
)

SIZES = {
    "demo": dict(student=StudentConfig(vocab_size=2048, hidden_size=64, intermediate_size=192, num_hidden_layers=4,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                       rope_theta=10000.0),
                 seq_len=128, global_batch=16, micro_batch=16, tokenizer_size=2048, layer=2,
                 teachers=["tiny-bert"]),
    "paper": dict(student=StudentConfig(), seq_len=256, global_batch=512, micro_batch=64, tokenizer_size=151666,
                  layer=17, teachers=list(TEACHER_ARCHS)[:6]),
}
OPTIONAL_ROWS = ("read-ahead", "heads", "eager-attention", "checkpointing", "online", "drift")


def run_config(s: Setup, steps: int, warmup: int, **kw) -> dict:
    """One variant on its own: median step time of `steps` steps after `warmup`."""
    return run_interleaved(s, steps, warmup, {"only": kw})["only"]


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



def benchmark_parser() -> argparse.ArgumentParser:
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
    return p


def _teachers(a, size: dict, p: argparse.ArgumentParser) -> list[str]:
    teachers = size["teachers"] if not a.teachers or a.teachers == ["default"] else (
        list(TEACHER_ARCHS)[:6] if a.teachers == ["all"] else [] if a.teachers == ["none"] else a.teachers)
    unknown = [t for t in teachers + a.cache_only if t not in TEACHER_ARCHS]
    if unknown:
        p.error(f"--teachers: unknown {unknown}; choose from {list(TEACHER_ARCHS)} or 'all'")
    return teachers


class StepBenchmark:
    """The rows of one `repa-mdlm benchmark` run, measured in order into `self.measured`."""

    def __init__(self, a, size: dict, device: torch.device, global_batch: int, micro_batch: int):
        self.a, self.size, self.device = a, size, device
        self.cfg = Config()
        self.cfg.train.optimizer = a.optimizer
        self.model, optimizer, self.optimizer_name = self.new_student()
        self.scratch = Path(tempfile.mkdtemp(prefix="repa-mdlm-benchmark-"))
        seq_len = size["seq_len"]
        self.n_sequences = max(4 * global_batch, 64)
        tokens = np.lib.format.open_memmap(self.scratch / "tokens.npy", mode="w+", dtype=np.uint32,
                                           shape=(self.n_sequences, seq_len))
        tokens[:] = np.random.default_rng(0).integers(1, size["tokenizer_size"] - 1, tokens.shape, dtype=np.uint32)
        tokens.flush()
        self.s = Setup(self.model, optimizer, seq_len, global_batch, micro_batch, size["layer"], device,
                       np.load(self.scratch / "tokens.npy", mmap_mode="r"), config=self.cfg)
        self.measured = Measured()

    def new_student(self, **student_overrides):
        from ..training.optim import make_optimizer

        student = dataclasses.replace(self.size["student"], **student_overrides)
        model = build_student(student, self.size["tokenizer_size"], self.size["tokenizer_size"] - 1, 0, seed=0)
        optimizer, optimizer_name = make_optimizer(self.cfg, list(model.to(self.device).parameters()))
        return model, optimizer, optimizer_name

    def run(self, s: Setup | None = None, warmup: int | None = None, **kw) -> dict:
        a = self.a
        return run_config(s or self.s, a.steps, a.warmup if warmup is None else warmup, **kw)

    def baselines(self) -> None:
        """The baseline, then each optional row not skipped."""
        a, s, m = self.a, self.s, self.measured
        if not a.compile_only:
            run_config(s, 1, max(5, a.warmup))  # settle the allocator, thread pools and clocks first
            m.base = m.add("baseline", self.run())
        if "read-ahead" not in a.skip:
            m.no_read_ahead = m.add("baseline, no read-ahead", self.run(dataclasses.replace(s, prefetch_batches=0)))
        if "heads" not in a.skip:
            m.unchunked = m.add("baseline, masked head unchunked", self.run(head="masked"))
            m.full = m.add("baseline, full LM head", self.run(head="full"))
        if "eager-attention" not in a.skip:
            e_model, e_optimizer, _ = self.new_student(attn_implementation="eager")  # a materialised [L, L] mask
            m.add("baseline, eager attention", self.run(dataclasses.replace(s, model=e_model, optimizer=e_optimizer)))
            del e_model, e_optimizer
        if "checkpointing" not in a.skip:
            self.model.activation_checkpointing_enable({"use_reentrant": False})
            m.add("baseline, activation checkpointing", self.run())
            self.model.activation_checkpointing_disable()

    def teachers(self, teachers: list[str]) -> None:
        """REPA with each teacher, cached and online, interleaved with a baseline; then each cache pass."""
        a, s, m, device = self.a, self.s, self.measured, self.device
        for name in teachers:
            teacher = published_teacher(name, device)
            dim = teacher.config.hidden_size
            projection = Projection(self.size["student"].hidden_size, dim).to(device)
            s.optimizer.add_param_group({"params": list(projection.parameters())})
            features = write_feature_cache(self.scratch, self.n_sequences, dim)
            variants = {"baseline": {}, "cached": {"features": features, "repa": "cached", "projection": projection}}
            if "online" not in a.skip:
                variants["online"] = {"repa": "online", "teacher": teacher, "projection": projection}
            m.paired[name] = run_interleaved(s, a.steps, a.warmup, variants)
            for mode in variants.keys() - {"baseline"}:
                m.add(f"{name} {mode}", m.paired[name][mode])
            s.optimizer.param_groups.pop()
            del teacher
            self._free()
        for name in teachers + [t for t in a.cache_only if t not in teachers]:
            teacher = published_teacher(name, device)
            m.cache_rate[name] = {batch: teacher_cache_throughput(teacher, batch, s.seq_len, device)
                                  for batch in a.teacher_batch_sizes}
            print(f"measured: {name} cache pass, sequences/s by teacher.batch_size: "
                  + ", ".join(f"{batch}: {'out of memory' if rate is None else f'{rate:,.0f}'}"
                              for batch, rate in m.cache_rate[name].items()), flush=True)
            del teacher
            self._free()

    def last_rows(self) -> None:
        """The drift check, the sweep, the head alone, and last the compiled rows (inductor's compile
        workers would otherwise share the CPU with the other rows)."""
        from ..training.optim import compile_backbone

        a, m = self.a, self.measured
        if "drift" not in a.skip:
            m.again = m.add("baseline, again (drift check)", self.run())
        m.sweep = sweep_micro_batches(self.s, a.sweep, a.steps, a.warmup) if a.sweep else []
        m.head = run_head_benchmark(a, SIZES[a.head_size or a.size], self.device) if a.head_rows else []
        for mode in ([] if a.compile is None else a.compile or ["backbone"]):
            c_model, c_optimizer, _ = self.new_student()
            compile_backbone(c_model, self.scratch / "compile-cache", mode)
            m.compiled[mode] = m.add(f"baseline, torch.compile {mode}",
                                     self.run(dataclasses.replace(self.s, model=c_model, optimizer=c_optimizer),
                                              max(a.warmup, 2)))  # the second call is still slow on CPU
            del c_model, c_optimizer

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser()
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    size = SIZES[a.size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    teachers = _teachers(a, size, p)
    B = a.global_batch or size["global_batch"]
    mb = a.micro_batch or min(size["micro_batch"], B)
    if B % mb:
        p.error(f"--global-batch {B} is not a multiple of --micro-batch {mb}")
    command = " ".join(sys.argv[1:] if argv is None else argv)
    if a.head_only:
        if not a.head_rows:
            p.error("--head-only needs --head-rows")
        head_size = SIZES[a.head_size or a.size]
        _publish(head_only_report(a, head_size, run_head_benchmark(a, head_size, device), device, command), a.append)
        return 0
    bench = StepBenchmark(a, size, device, B, mb)
    # first: a failing demo stops the benchmark before the long part, and it gets an idle machine
    bench.measured.demo_s = demo_dag_wall_time(Path(__file__).resolve().parents[3]) if a.demo_dag else None
    if a.compile_only:  # only the compile rows (a short GPU loan gives them a stage of their own)
        a.skip, teachers, a.sweep, a.head_rows = list(OPTIONAL_ROWS), [], None, 0
    bench.baselines()
    bench.teachers(teachers)
    bench.last_rows()
    setup = {"seq_len": size["seq_len"], "global_batch": B, "micro_batch": mb,
             "optimizer_name": bench.optimizer_name, "head_size": SIZES[a.head_size or a.size]}
    _publish(step_report(a, bench.measured, bench.model, setup, device, command), a.append)
    shutil.rmtree(bench.scratch, ignore_errors=True)
    return 0


def _publish(text: str, append: str | None) -> None:
    print(text)
    if append:
        with open(append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    raise SystemExit(main())
