"""The benchmark's figures and its Markdown report: model FLOPs per token, MFU against the
datasheet peak, the step table, the notes under it and the micro-batch sweep table."""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass, field

import torch

from ..model.student import count_parameters, output_embedding
from .head import head_table
from .step import PHASES, paired_ratio

PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200 NVL": 835.0, "H200": 989.0,
                    "A100": 312.0}
"""Datasheet dense bf16 TFLOP/s, the MFU denominator; the first name found in the device's name wins."""


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


def device_name(device, processor: bool = True) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    cpu = (platform.processor() or platform.machine()) if processor else platform.machine()
    return f"CPU ({cpu}, {torch.get_num_threads()} threads)"


@dataclass
class Measured:
    """What one benchmark run measured, row by row, for the report."""
    rows: list[tuple[str, dict]] = field(default_factory=list)
    base: dict | None = None
    again: dict | None = None
    no_read_ahead: dict | None = None
    unchunked: dict | None = None
    full: dict | None = None
    paired: dict[str, dict] = field(default_factory=dict)
    cache_rate: dict[str, dict] = field(default_factory=dict)
    compiled: dict[str, dict] = field(default_factory=dict)
    sweep: list[dict] = field(default_factory=list)
    head: list[dict] = field(default_factory=list)
    demo_s: float | None = None

    def add(self, name: str, result: dict) -> dict:
        """Keep a row, and print it at once: a run cut short keeps what it measured."""
        self.rows.append((name, result))
        memory = f", peak {result['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in result else ""
        print(f"measured: {name}: step {result['step_s']:.3f} s, {result['tokens_per_s']:,.0f} tokens/s{memory}; "
              f"first step (with any compile) {result['first_step_s']:.1f} s", flush=True)
        return result

    @property
    def steady(self) -> dict | None:
        """The ratios' baseline: the faster of the first and last runs (noise only ever adds time)."""
        return min(self.base, self.again or self.base, key=lambda r: r["step_s"]) if self.base else None


@dataclass
class Rates:
    """Per-row throughput figures: MFU by the model count, and the FLOP/s actually executed."""
    fpt: float
    executed_fpt: float
    peak: float | None

    def mfu(self, r: dict) -> str:
        return f"{100 * r['tokens_per_s'] * self.fpt / (self.peak * 1e12):.1f} %" if self.peak else "n/a"

    def executed_tflops(self, r: dict) -> str:
        return f"{r['tokens_per_s'] * self.executed_fpt / 1e12:.1f}"


def head_only_report(a, size: dict, head: list[dict], device, command: str) -> str:
    return "\n".join([f"### {datetime.date.today().isoformat()} · {device_name(device, processor=False)} · LM head alone",
                      "", f"torch {torch.__version__}; command: `repa-mdlm benchmark {command}`",
                      *head_table(head, a, size)]) + "\n"


def step_report(a, m: Measured, model, setup: dict, device, command: str) -> str:
    """The whole report. setup: seq_len, global_batch, micro_batch, optimizer_name."""
    seq_len = setup["seq_len"]
    rates = Rates(flops_per_token(model, seq_len), flops_per_token(model, seq_len, head_fraction=MEAN_MASK_RATE),
                  peak_tflops(device))
    on_gpu = device.type == "cuda"
    lines = _header(a, model, setup, rates, matmul_tflops(device), device, command)
    lines += _table(m, rates, on_gpu)
    lines += _notes(a, m)
    if m.head:
        lines += head_table(m.head, a, setup["head_size"])
    if m.demo_s is not None:
        lines.append(f"- Offline demo DAG (`snakemake --profile profiles/demo`, from nothing): "
                     f"{int(m.demo_s // 60)} min {m.demo_s % 60:.0f} s.")
    if m.sweep:
        lines += _sweep_table(m.sweep, rates, on_gpu)
    return "\n".join(lines) + "\n"


def _header(a, model, setup: dict, rates: Rates, matmul: float | None, device, command: str) -> list[str]:
    import transformers

    return [
        f"### {datetime.date.today().isoformat()} · {device_name(device)} · size={a.size} · seq {setup['seq_len']} · "
        f"batch {setup['global_batch']} (micro {setup['micro_batch']}) · {setup['optimizer_name']}",
        "",
        f"torch {torch.__version__}, transformers {transformers.__version__}; command: "
        f"`repa-mdlm benchmark {command}`",
        f"Student: {count_parameters(model) / 1e6:.1f} M parameters; {rates.fpt / 1e6:,.1f} MFLOP per token by the "
        f"model count (6N with the full head + attention), {rates.executed_fpt / 1e6:,.1f} executed (head on the "
        f"masked {MEAN_MASK_RATE:.0%} of positions). MFU = model FLOP/s / {rates.peak or 'n/a'} TFLOP/s (datasheet "
        "dense bf16)"
        + (f"; an 8192^3 bf16 matmul ran at {matmul:.0f} TFLOP/s here." if matmul else ".")
        + " The chunked head computes its gradient in the head+loss phase; the other heads' backward is in backward.",
        "",
    ]


def _table(m: Measured, rates: Rates, on_gpu: bool) -> list[str]:
    reference = m.steady["step_s"] if m.steady else None
    lines = ["| run | step (s) | tokens/s | MFU | executed TFLOP/s | vs baseline | "
             + " | ".join(f"{ph} (ms)" for ph in PHASES) + (" | peak mem (GiB)" if on_gpu else "") + " |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(PHASES) + ("---:|" if on_gpu else "")]
    for name, r in m.rows:
        cells = [name, f"{r['step_s']:.3f}", f"{r['tokens_per_s']:,.0f}", rates.mfu(r), rates.executed_tflops(r),
                 f"{r['step_s'] / reference:.3f}x" if reference else "n/a"]
        cells += [f"{1000 * r['phases'][ph]:.1f}" for ph in PHASES]
        if on_gpu:
            cells.append(f"{r['peak_mem_gib']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _notes(a, m: Measured) -> list[str]:
    steady = m.steady
    reference = steady["step_s"] if steady else None
    lines = [""]
    if m.unchunked and m.full:
        head_ratio = m.unchunked["phases"]["head+loss"] / m.full["phases"]["head+loss"]
        head_time = (m.unchunked["phases"]["head+loss"] + m.unchunked["phases"]["backward"]
                     - steady["phases"]["backward"])  # the head's forward, plus its backward where autograd runs it
        lines += [f"- Masked-only LM head vs full head: {1 / head_ratio:.2f}x faster on the head's forward "
                  "(both plain autograd).",
                  f"- Chunked fused head vs plain masked head: {m.unchunked['step_s'] / steady['step_s']:.2f}x on the "
                  f"whole step; head forward+backward {1000 * steady['phases']['head+loss']:.1f} ms vs "
                  f"{1000 * head_time:.1f} ms."]
    eager_attention = next((r for n, r in m.rows if n == "baseline, eager attention"), None)
    if eager_attention:
        lines.append(f"- SDPA without a materialised mask vs eager attention: "
                     f"{eager_attention['step_s'] / steady['step_s']:.2f}x on the whole step.")
    if m.no_read_ahead:
        lines.append(f"- Read-ahead: data phase {1000 * steady['phases']['data']:.1f} ms per step with it, "
                     f"{1000 * m.no_read_ahead['phases']['data']:.1f} ms without.")
    for mode, r in m.compiled.items():
        speed = f"{reference / r['step_s']:.2f}x the eager step's speed; " if reference else ""
        lines.append(f"- torch.compile {mode}: {speed}the first step (compile included) took "
                     f"{r['first_step_s']:.1f} s.")
    for name, rates_by_batch in m.cache_rate.items():
        rates = ", ".join("out of memory" if rate is None else f"{rate:,.0f}" for rate in rates_by_batch.values())
        cache = (f"cache pass {rates} sequences/s at teacher.batch_size {', '.join(map(str, rates_by_batch))}")
        if name not in m.paired:
            lines.append(f"- {name}: {cache}.")
            continue
        p_run = m.paired[name]
        overheads = ", ".join(f"{100 * (paired_ratio(p_run[mode], p_run['baseline']) - 1):+.1f} % {mode}"
                              for mode in ("cached", "online") if mode in p_run)
        lines.append(f"- {name}: REPA overhead {overheads} (median of {a.steps} step-by-step ratios to a baseline "
                     f"step interleaved with them); {cache}.")
    if m.again:
        lines.append(f"- The table's ratios are to the faster of the first and last baseline runs, which differ by "
                     f"{100 * abs(m.again['step_s'] / m.base['step_s'] - 1):.1f} %: differences below that are drift. "
                     "The REPA overheads above are paired, and so less exposed to it.")
    return lines


def _sweep_table(sweep: list[dict], rates: Rates, on_gpu: bool) -> list[str]:
    lines = ["", "Micro-batch sweep (baseline step, global batch fixed):", "",
             "| micro batch | activation checkpointing | step (s) | tokens/s | MFU |"
             + (" peak mem (GiB) |" if on_gpu else ""),
             "|---:|---|---:|---:|---:|" + ("---:|" if on_gpu else "")]
    for entry in sweep:
        r = entry["result"]
        head = f"| {entry['micro_batch']} | {'on' if entry['checkpointing'] else 'off'} | "
        if r is None:
            lines.append(head + "out of memory | | |" + (" |" if on_gpu else ""))
        else:
            lines.append(head + f"{r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | {rates.mfu(r)} |"
                         + (f" {r['peak_mem_gib']:.1f} |" if on_gpu else ""))
    fits = [e for e in sweep if e["result"] is not None]
    if fits:
        best = min(fits, key=lambda e: e["result"]["step_s"])
        lines.append(f"\nFastest: train.micro_batch = {best['micro_batch']}, train.activation_checkpointing = "
                     f"{str(best['checkpointing']).lower()}.")
    return lines
