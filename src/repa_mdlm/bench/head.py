"""The LM head and SUBS loss alone (`repa-mdlm benchmark --head-rows`): the full head, the masked
rows with plain autograd, and the chunked head training runs, with time and peak memory."""

from __future__ import annotations

import statistics
import time

import torch

from ..model.diffusion import HEAD_CHUNK_ROWS, chunked_weighted_nll, masked_token_nll


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


def run_head_benchmark(a, size: dict, device) -> list[dict]:
    """The --head-rows comparison at `size` (the --head-size's, else the --size's)."""
    return head_benchmark(a.head_rows, size["student"].hidden_size, size["tokenizer_size"], device,
                          chunk_rows=a.head_chunk_rows)


def head_table(head: list[dict], a, size: dict) -> list[str]:
    lines = ["", f"LM head + SUBS loss alone, forward and backward: {a.head_rows:,} masked rows (and as many "
             f"unmasked for 'full'), d = {size['student'].hidden_size}, vocab {size['tokenizer_size']:,} "
             f"({a.head_size or a.size} sizes), chunks of {a.head_chunk_rows:,} rows:", "",
             "| head | time (s) | vs full | peak memory above start (GiB) |", "|---|---:|---:|---:|"]
    for h in head:
        memory = "n/a" if h["peak_gib"] is None else f"{h['peak_gib']:.2f}"
        lines.append(f"| {h['head']} | {h['s']:.3f} | {head[0]['s'] / h['s']:.2f}x faster | {memory} |")
    return lines
