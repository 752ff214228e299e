"""The prepared check for a lent GPU: `scripts/gpu-check.sh` runs these stages one by one, each
under its own time limit, and ends with `summary`. `--smoke` runs the same code on a CPU at demo
size, so the check cannot rot between loans (CI runs it).

    python -m repa_mdlm.bench.gpu_check env|sanity|cell|summary|clean --out DIR [--smoke] [--work DIR]

- env: the device, driver and versions, and the bf16 matmul rate it really sustains.
- sanity: the device checks of `device_checks` at the paper's shapes: SDPA runs a fused kernel
  (asserted from the profiler), position 0 sees the last token, the chunked head under bf16 autocast
  with fp32 weights matches an fp64 reference, and train.optimizer adamw8bit is bitsandbytes'
  AdamW8bit with 8-bit states.
- cell: a paper-sized baseline cell through the workflow's own entry points (`repa-mdlm tokenizer`,
  `tokenize`, `train`, `evaluate`) for a few dozen steps. The corpus is synthetic text over a
  word-level vocabulary as wide as Qwen2.5's tokenizer (151 666 with the mask), so the LM head
  has the paper's width; no hub is needed. Its perplexity means nothing; its speed is the grid's.

Every stage writes DIR/<stage>.json; `summary` turns them into DIR/summary.md. The cell stage works in
a scratch folder (--work) it makes, or finds empty, and marks as its own; `clean` deletes only that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import BASELINE, Cell, Config
from ..config.specs import cell_spec, data_spec
from ..data.synthetic import write_synthetic_corpus
from ..io import atomic_write_json, atomic_write_text, read_json_object
from ..layout import METRICS, PARTIAL_LOG, TRAIN_LOG, TRAIN_SUMMARY
from .device_checks import check_bidirectional, check_chunked_head, check_optimizer, check_sdpa_kernel


def size_of(smoke: bool) -> dict:
    """The benchmark's sizes: the paper's (vocab 151 666: Qwen2.5's tokenizer and the mask), or the demo's."""
    from .benchmark import SIZES

    return SIZES["demo" if smoke else "paper"]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- env
def environment() -> dict:
    import transformers

    from .report import matmul_tflops, peak_tflops

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "transformers": transformers.__version__, "cpus": os.cpu_count(), "host": platform.node()}
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except Exception as e:  # reported, and the sanity stage fails on it
        env["bitsandbytes"] = f"unavailable: {type(e).__name__}: {e}"
    dev = device()
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=props.total_memory / 2**30,
                   cudnn=torch.backends.cudnn.version(), datasheet_bf16_tflops=peak_tflops(dev),
                   matmul_bf16_tflops=matmul_tflops(dev))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            env["driver"] = f"unknown ({e})"
    else:
        env["gpu"] = None
    return env


# ---------------------------------------------------------------- sanity
def _check(results: list, name: str, fn) -> None:
    began = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as e:  # a crash is a failed check, and the next check still runs
        ok, detail = False, f"{type(e).__name__}: {e}"
    results.append({"check": name, "ok": bool(ok), "detail": detail, "s": round(time.perf_counter() - began, 2)})
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def sanity(smoke: bool) -> dict:
    dev = device()
    results: list[dict] = []
    _check(results, "sdpa fused kernel at head_dim 64, GQA 14:2", lambda: check_sdpa_kernel(dev))
    _check(results, "bidirectional attention", lambda: check_bidirectional(dev))
    vocab = size_of(smoke)["tokenizer_size"]
    _check(results, "chunked head, bf16 autocast, fp32 weights vs fp64",
           lambda: check_chunked_head(dev, vocab, rows=2048 if smoke else 8192))
    _check(results, "optimizer adamw8bit is bitsandbytes' AdamW8bit", lambda: check_optimizer(dev))
    return {"device": str(dev), "checks": results, "ok": all(r["ok"] for r in results)}


# ---------------------------------------------------------------- cell
def word_list(size: int) -> list[str]:
    """PORTUGUESE_WORDS, then w<i> up to `size` words."""
    from ..data.synthetic import PORTUGUESE_WORDS

    words = list(dict.fromkeys(PORTUGUESE_WORDS))[:size]
    return words + [f"w{i}" for i in range(len(words), size)]


def synthetic_tokenizer(out_dir: Path, size: int) -> Path:
    """A word-level fast tokenizer of `size` tokens (eos and unk included; the mask is added by
    `repa-mdlm tokenizer`): the paper's LM-head width without Qwen's files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for word in word_list(size - 2):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return out_dir


def gpu_cell_config(work: Path, smoke: bool) -> dict:
    """config.yaml, the paper's card, with the synthetic corpus and a short run (raw, as YAML gives it)."""
    import yaml

    repo = Path(__file__).resolve().parents[3]
    raw = yaml.safe_load((repo / "config.yaml").read_text())
    seq_len = 128 if smoke else raw.get("seq_len", 256)
    sequences = {"train": 64 if smoke else 2048, "val": 16 if smoke else 256, "test": 16 if smoke else 256}
    raw.update(results_dir=str(work / SWEEP), seq_len=seq_len)  # a sweep's folder of its own, beside the inputs
    raw["corpus"] = {"source": "local", "paths": [str(work / "corpus" / "*.txt")], "val_permille": 150,
                     "test_permille": 150, **{f"{s}_tokens": n * seq_len for s, n in sequences.items()}}
    raw["tokenizer"] = {"name_or_path": str(work / "synthetic-tokenizer")}
    raw["repa"] = {**raw["repa"], "teachers": [], "layers": [2] if smoke else raw["repa"]["layers"]}
    train = raw.setdefault("train", {})
    train.update(steps=6 if smoke else 24, log_every=1, val_every=10**6, checkpoint_every=4 if smoke else 16,
                 val_sequences=sequences["val"], warmup_steps=2)
    if smoke:
        raw["student"] = dict(vars(size_of(smoke)["student"]))
        train.update(global_batch=16, micro_batch=8)
    raw["evaluate"] = {**raw.get("evaluate", {}), "sequences": sequences["test"], "batch_size": train["micro_batch"]}
    return raw


def checked_config(raw: dict) -> Config:
    """What the Snakefile does before any job: the schema (jsonschema is carried to the GPU machine),
    then the typed checks."""
    from ..config.loading import validate_schema

    validate_schema(raw)
    return Config.from_dict(raw)


def _run(args: list[str]) -> float:
    """One entry point, its output into this stage's log; its wall time."""
    began = time.perf_counter()
    print(f"$ {' '.join(args[:3])} {args[3]} ...", flush=True)
    rc = subprocess.run(args).returncode
    if rc:
        raise RuntimeError(f"repa-mdlm {args[3]} exited {rc} (its output is above)")
    return time.perf_counter() - began


TRAIN_LOG_COPY = "cell-train-log.jsonl"
WORK_MARK = ".repa-mdlm-gpu-check"
"""The file that marks a --work folder as the cell stage's own scratch: only a marked folder is ever emptied."""
SWEEP = "sweep"
"""The cell's results_dir inside --work: data/ and runs/ as a sweep lays them out, apart from its inputs."""
WORK_ENTRIES = ("synthetic-tokenizer", "corpus", SWEEP)
"""What the cell stage makes in its --work folder, and all that `clean_work` deletes there."""


class WorkFolderError(RuntimeError):
    """A --work folder that holds files the check did not make: it is refused, never emptied."""


def claim_work(work: Path) -> None:
    """Make `work` the cell stage's scratch: a new or empty folder gets the mark; a folder an earlier
    run marked is first emptied of what that run made; anything else is refused, its files untouched."""
    if work.exists() and not work.is_dir():
        raise WorkFolderError(f"--work {work} is a file, not a folder; give a new or empty folder")
    made_folder = _made_folder(work) if (work / WORK_MARK).is_file() else not work.exists()
    clean_work(work, remove_folder=False)
    foreign = sorted(p.name for p in work.iterdir()) if work.exists() else []
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise WorkFolderError(
            f"--work {work} holds files the GPU check did not make ({shown}); it only deletes a folder it made "
            f"and marked ({WORK_MARK}). Give a new or empty folder (scripts/gpu-check.sh: GPU_CHECK_WORK=DIR).")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / WORK_MARK, {"made_by": "python -m repa_mdlm.bench.gpu_check cell", "made_folder": made_folder})


def _made_folder(work: Path) -> bool:
    """Whether the check made the marked folder itself (else it was given one, empty, and leaves it). An
    unreadable mark is a DataError: nothing is deleted on its word."""
    return bool(read_json_object(work / WORK_MARK, "GPU check mark").get("made_folder", True))


def clean_work(work: Path, remove_folder: bool = True) -> list[str]:
    """Delete what the cell stage made in a folder it marked (WORK_ENTRIES, then the mark), and the folder
    itself if the check made it and that empties it; an unmarked folder is left as it is. Returns the
    names left in it."""
    import shutil

    if not (work / WORK_MARK).is_file():
        return sorted(p.name for p in work.iterdir()) if work.is_dir() else []
    remove_folder = remove_folder and _made_folder(work)
    for name in WORK_ENTRIES:
        path = work / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    (work / WORK_MARK).unlink()
    left = sorted(p.name for p in work.iterdir())
    if remove_folder and not left:
        work.rmdir()
    return left


def cell(out: Path, work: Path, smoke: bool, compile_code: int = 0) -> dict:
    """Data, then a baseline cell trained and evaluated by the workflow's own entry points, in `work`
    (gigabytes at paper size: keep it out of a folder whose files travel back; `claim_work` says which
    folders it may use). OUT/cell.json is rewritten after each step, and the training log is copied to
    OUT even when the stage is cut short."""
    import shutil

    claim_work(work)
    result: dict = {"smoke": smoke, "compile": compile_code}

    def save():
        atomic_write_json(out / "cell.json", result)

    tokenizer_size = size_of(smoke)["tokenizer_size"]
    began = time.perf_counter()
    synthetic_tokenizer(work / "synthetic-tokenizer", tokenizer_size - 1)
    raw = gpu_cell_config(work, smoke)
    corpus = raw["corpus"]
    # documents go to val and test by hash (15 % each): each split's expected share holds three times its
    # budget (tokenize refuses a split that falls short), in documents short enough for the draw to even out
    words_per_document = 200 if smoke else 2000
    shares = {"train": 1 - (corpus["val_permille"] + corpus["test_permille"]) / 1000,
              "val": corpus["val_permille"] / 1000, "test": corpus["test_permille"] / 1000}
    total = 3 * max(corpus[f"{split}_tokens"] / share for split, share in shares.items())
    write_synthetic_corpus(work / "corpus", math.ceil(total / words_per_document),
                           vocabulary=word_list(tokenizer_size - 3), words_per_document=words_per_document)
    cfg = checked_config(raw)
    result.update(corpus_s=time.perf_counter() - began, micro_batch=cfg.train.micro_batch,
                  global_batch=cfg.train.global_batch, seq_len=cfg.seq_len, tokenizer_size=tokenizer_size,
                  planned_steps=cfg.train.steps)
    save()
    py = [sys.executable, "-m", "repa_mdlm"]
    data = work / SWEEP / "data"
    spec = json.dumps(data_spec(cfg))
    result["tokenizer_s"] = _run([*py, "tokenizer", "--spec", spec, "--out", str(data / "tokenizer")])
    result["tokenize_s"] = _run([*py, "tokenize", "--spec", spec, "--tokenizer", str(data / "tokenizer"),
                                 "--out", str(data)])
    save()
    baseline = Cell(BASELINE, None, None, cfg.seeds[0])
    run_dir = work / SWEEP / "runs" / baseline.name
    cspec = json.dumps(cell_spec(cfg, baseline))
    threads = str(max(1, (os.cpu_count() or 2) // 2))
    try:
        result["train_s"] = _run([*py, "train", "--spec", cspec, "--cell", baseline.name, "--data", str(data),
                                  "--run-dir", str(run_dir), "--features=", "--prefetch-batches", "2",
                                  "--compile", str(compile_code), "--activation-checkpointing", "0",
                                  "--threads", threads, "--nproc", "0" if smoke else "1"])
    finally:  # the steps' speeds survive a failed or cut-short run
        log = next((p for p in (run_dir / TRAIN_LOG, run_dir / PARTIAL_LOG) if p.exists()), None)
        if log:
            shutil.copyfile(log, out / TRAIN_LOG_COPY)
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            step_rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
            steady = step_rates[len(step_rates) // 3:]  # past the first steps' allocator and autotuning warm-up
            result.update(steps_logged=len(step_rates),
                          tokens_per_s_median=float(np.median(steady)) if steady else None)
            if result["tokens_per_s_median"]:
                result["paper_cell_hours_at_this_speed"] = 5000 * 512 * 256 / result["tokens_per_s_median"] / 3600
        save()
    summary = read_json_object(run_dir / TRAIN_SUMMARY, "training summary")
    result.update(summary=summary, steps=summary["steps"], optimizer=summary["optimizer"],
                  tokens_per_s_whole_run=summary["tokens_per_s"])
    save()
    result["evaluate_s"] = _run([*py, "evaluate", "--spec", cspec, "--cell", baseline.name, "--data", str(data),
                                 "--run-dir", str(run_dir), "--out", str(run_dir / METRICS),
                                 "--threads", threads])
    result["metrics"] = read_json_object(run_dir / METRICS, "metrics")
    return result


# ---------------------------------------------------------------- summary
def summary(out: Path) -> str:
    """summary.md from what the stages left: each stage's exit and time, then their figures. The
    benchmark's rows come from its progress lines too, so a benchmark cut short still reports."""
    def load(name):
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    env, checks, cell_result = load("env"), load("sanity"), load("cell")
    lines = ["# GPU check", "", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    if env:
        lines.append(f"- device: {env.get('gpu') or 'CPU'}, driver {env.get('driver', 'n/a')}, python {env['python']}, "
                     f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
                     f"bitsandbytes {env['bitsandbytes']}")
        if env.get("matmul_bf16_tflops"):
            lines.append(f"- 8192^3 bf16 matmul: {env['matmul_bf16_tflops']:.0f} TFLOP/s "
                         f"(datasheet {env.get('datasheet_bf16_tflops')})")
    stages_tsv = out / "stages.tsv"
    if stages_tsv.exists():
        lines += ["", "| stage | exit | seconds | limit |", "|---|---:|---:|---:|"]
        for row in stages_tsv.read_text().splitlines()[1:]:
            name, rc, seconds, limit = row.split("\t")
            note = " (time limit)" if rc in ("124", "137") else ""
            lines.append(f"| {name} | {rc}{note} | {seconds} | {limit} |")
    stages_log = out / "stages.log"
    measured = [line for line in stages_log.read_text().splitlines() if line.startswith("measured: ")] \
        if stages_log.exists() else []
    if measured:
        lines += ["", "Benchmark rows as measured (tables with MFU and phases in benchmark.md):", ""]
        lines += [f"- {line[len('measured: '):]}" for line in measured]
    if checks:
        lines += ["", "Sanity:", ""] + [f"- {'PASS' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}"
                                         for c in checks["checks"]]
    if cell_result:
        c = cell_result
        lines += ["", f"Cell (real `repa-mdlm train` + `evaluate`, {c.get('steps', c.get('steps_logged'))} of "
                      f"{c.get('planned_steps')} steps, global batch {c.get('global_batch')}, micro "
                      f"{c.get('micro_batch')}, {c.get('optimizer', 'optimizer not reported')}):", ""]
        if c.get("tokens_per_s_median"):
            whole = c.get("tokens_per_s_whole_run")
            lines.append(f"- tokens/s: {c['tokens_per_s_median']:,.0f} (median of the later steps)"
                         + (f", {whole:,.0f} over the whole run" if whole else ""))
        walls = ", ".join(f"{k[:-2]} {c[k]:.0f} s" for k in ("tokenizer_s", "tokenize_s", "train_s", "evaluate_s")
                          if k in c)
        lines.append(f"- wall: {walls or 'no step finished'}")
        if "metrics" in c:
            lines.append(f"- test PPL {c['metrics'].get('test_ppl'):.1f} (synthetic text: a plumbing check, "
                         "not a result)")
        if c.get("paper_cell_hours_at_this_speed") and not c["smoke"]:
            lines.append(f"- a paper cell (655 M tokens) at this speed: {c['paper_cell_hours_at_this_speed']:.2f} h; "
                         f"121 cells: {121 * c['paper_cell_hours_at_this_speed']:.0f} h")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "summary.md", text)
    return text


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repa_mdlm.bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["env", "sanity", "cell", "summary", "clean"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--smoke", action="store_true", help="CPU, demo size: what CI runs")
    p.add_argument("--work", type=Path, help="cell: scratch folder for data and the run, new or empty (default: "
                                             "OUT/cell-work); clean: delete what the cell stage made there")
    p.add_argument("--compile", type=int, default=0, help="the cell's train.compile code (0 off, 1 backbone, 2 blocks)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # a stage's time limit: `finally` blocks still run
    work = a.work or a.out / "cell-work"
    if a.stage == "summary":
        print(summary(a.out))
        return 0
    if a.stage == "clean":
        if left := clean_work(work):
            print(f"{work}: left as it is (not made by the check, or holding other files: {', '.join(left[:5])})")
        return 0
    if a.stage == "env":
        result = environment()
    elif a.stage == "sanity":
        result = sanity(a.smoke)
    else:
        try:
            result = cell(a.out, work, a.smoke, a.compile)
        except WorkFolderError as e:
            print(f"python -m repa_mdlm.bench.gpu_check cell: {e}", file=sys.stderr)
            return 2
    atomic_write_json(a.out / f"{a.stage}.json", result)
    print(json.dumps(result, indent=1, default=str)[:4000], flush=True)
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
