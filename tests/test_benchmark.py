"""The benchmark entry point runs and reports every row (it measures nothing here: the
figures live in docs/benchmarks.md)."""

import pytest
import torch

from repa_mdlm.bench import benchmark


def test_benchmark_prints_and_appends_every_row(tmp_path, capsys, monkeypatch):
    real_run_config, real_sweep = benchmark.run_config, benchmark.sweep_micro_batches

    def sweep(s, *args):  # in the sweep, pretend micro-batch 16 does not fit on the device
        def run_config(setup, *a, **k):
            if setup.micro_batch == 16:
                raise torch.OutOfMemoryError("pretend")
            return real_run_config(setup, *a, **k)

        monkeypatch.setattr(benchmark, "run_config", run_config)
        return real_sweep(s, *args)

    monkeypatch.setattr(benchmark, "sweep_micro_batches", sweep)
    out = tmp_path / "bench.md"
    assert benchmark.main(["--size", "demo", "--steps", "1", "--warmup", "0", "--teachers", "tiny-bert",
                           "--sweep", "8", "16", "--head-rows", "64", "--append", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("baseline", "baseline, no read-ahead", "baseline, masked head unchunked", "baseline, full LM head",
                "baseline, eager attention", "baseline, activation checkpointing", "tiny-bert cached", "tiny-bert online"):
        assert f"| {row} |" in printed
    assert "REPA overhead" in printed and "cache pass" in printed
    assert "| 16 | off | out of memory" in printed and "| 8 | on |" in printed
    assert "Fastest: train.micro_batch = 8" in printed
    assert "| baseline, again (drift check) |" in printed
    for head in ("full", "masked", "chunked"):
        assert f"| {head} | " in printed
    table = printed[printed.index("### "):]  # after the rows' progress lines
    assert out.read_text().strip() == table.strip()


def test_benchmark_refuses_an_unknown_teacher():
    with pytest.raises(SystemExit):
        benchmark.main(["--size", "demo", "--teachers", "gpt-5"])


def test_head_only_compares_the_three_heads(capsys):
    assert benchmark.main(["--head-only", "--head-rows", "64", "--head-chunk-rows", "16"]) == 0
    printed = capsys.readouterr().out
    assert "chunks of 16 rows" in printed
    assert all(f"| {head} | " in printed for head in ("full", "masked", "chunked"))
    assert "| baseline |" not in printed


def test_short_run_for_a_gpu_loan_prints_each_row_as_measured(capsys):
    """What scripts/gpu-check.sh asks for: optional rows skipped, both compile modes, the cache pass at
    several teacher batch sizes; every row printed as soon as it is measured."""
    assert benchmark.main(["--size", "demo", "--steps", "1", "--warmup", "0", "--teachers", "tiny-bert",
                           "--skip", "read-ahead", "heads", "eager-attention", "checkpointing", "online", "drift",
                           "--compile", "blocks", "--teacher-batch-sizes", "4", "8"]) == 0
    printed = capsys.readouterr().out
    for row in ("baseline", "tiny-bert cached", "baseline, torch.compile blocks"):
        assert f"measured: {row}: step" in printed and f"| {row} |" in printed
    for row in ("no read-ahead", "full LM head", "eager attention", "activation checkpointing", "tiny-bert online",
                "drift check", "torch.compile backbone"):
        assert row not in printed
    assert "at teacher.batch_size 4, 8." in printed
    assert "MFU = model FLOP/s" in printed and "executed" in printed


def test_compile_only_and_cache_only_rows(capsys):
    assert benchmark.main(["--size", "demo", "--steps", "1", "--warmup", "0", "--compile-only", "--compile", "blocks",
                           "--teachers", "none", "--cache-only", "tiny-bert", "--teacher-batch-sizes", "4"]) == 0
    printed = capsys.readouterr().out
    assert "measured: baseline, torch.compile blocks: step" in printed and "first step (with any compile)" in printed
    assert "measured: baseline:" not in printed and "tiny-bert cached" not in printed
    assert "| baseline, torch.compile blocks |" in printed and "| n/a |" in printed
    assert "- tiny-bert: cache pass" in printed and "REPA overhead" not in printed
