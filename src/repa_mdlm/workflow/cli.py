"""`repa-mdlm <step>`: the entry points the Snakemake rules call.

Each subcommand is one function below, registered with `@command`. Its typed signature and the
"Args:" section of its docstring are its command line (arguments.py): an option's name, type,
default and help text each have one home. Jobs receive their slice of the config as JSON (`--spec`),
built by specs.*_spec. `repa-mdlm benchmark` has its own parser (benchmark.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from ..config import COMPILE_MODES, Cell, Config, ConfigError
from ..config.specs import THROUGHPUT_ONLY_TRAIN_KEYS, apply_throughput_setting_code
from .arguments import COMMANDS, Option, Threads, _threads, add_command, command


def build_parser() -> argparse.ArgumentParser:

    p = argparse.ArgumentParser(prog="repa-mdlm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        add_command(sub, name, fn)
    sub.add_parser("benchmark", help="training-step benchmark: tokens/s, MFU, REPA overhead "
                                     "(see `repa-mdlm benchmark -h`)")
    return p


# ---------------------------------------------------------------- helpers of the steps
def _spec(text: str) -> Config:
    return Config.from_dict(json.loads(text), job_spec=True)


def _with_tracking(cfg: Config, tracking: str | None) -> Config:
    """The tracking section a job was given on its command line (it is in no spec: snakemake_plan.tracking_setting)."""
    if tracking:
        from ..config import TrackingConfig
        from ..config.base import build_section

        cfg.tracking = build_section(TrackingConfig, json.loads(tracking), "tracking")
        errors = cfg.tracking.check()
        if errors:
            raise ConfigError("invalid --tracking:\n  - " + "\n  - ".join(errors))
    return cfg


_GPU_LOCK = None


def _pin_one_gpu() -> None:
    """On a multi-GPU workstation (no Slurm, no CUDA_VISIBLE_DEVICES), take a free GPU of
    our own so concurrent jobs never share one."""
    global _GPU_LOCK
    from ..training.distributed import claim_gpu, visible_gpu_count

    if "WORLD_SIZE" not in os.environ:
        _GPU_LOCK = claim_gpu(visible_gpu_count())


# ---------------------------------------------------------------- the jobs of one sweep, in DAG order
@command
def check_config(config: str) -> None:
    """Validate a config file and print the grid size.

    Args:
        config: the config file (YAML) to check
    """
    from ..config.loading import load_config

    cfg = load_config(config)
    cells = cfg.cells()
    arms = " + ".join(f"{len(teachers)} teachers x {len(layers)} layers x {len(weights)} weights"
                      + (f" ({arm.tag})" if arm.tag else "") for arm, teachers, layers, weights in cfg.repa.arms())
    print(f"{config}: valid; {len(cells)} training cells (baseline + {arms}; x {len(cfg.seeds)} seeds)")


@command
def tokenizer(spec: str, out: str) -> None:
    """Load or train the student tokenizer, with a mask token.

    Args:
        spec: the job's config slice as JSON (specs.data_spec)
        out: the tokenizer folder to write
    """
    from ..data.dataset import prepare_tokenizer

    cfg = _spec(spec)
    prepare_tokenizer(cfg.tokenizer, cfg.corpus, out)


@command
def tokenize(spec: str, tokenizer: str, out: str, test_only: bool = False) -> None:
    """Tokenize and pack the corpus into train/val/test arrays.

    Args:
        spec: the job's config slice as JSON (specs.data_spec, or specs.zero_shot_data_spec)
        tokenizer: the student tokenizer's folder
        out: the data folder to write (token arrays and manifest.json)
        test_only: a zero-shot set: every document goes to test.bin
    """
    from ..data.dataset import tokenize_and_pack

    cfg = _spec(spec)
    manifest = tokenize_and_pack(cfg.corpus, tokenizer, cfg.seq_len, out, test_only=test_only)
    print(json.dumps({s: {k: v for k, v in i.items() if k != "sha256"} for s, i in manifest["splits"].items()}))


@command
def build_teacher(spec: str, teacher: str, tokenizer: str, out: str) -> None:
    """Materialise a teacher from init_from_config, convert_from or control_of (a random twin).

    Args:
        spec: the job's config slice as JSON (specs.build_teacher_spec)
        teacher: the teacher's name in the config
        tokenizer: the student tokenizer's folder (a random-init teacher shares it)
        out: the teacher's model folder to write
    """
    from ..teachers.built import build_random_teacher, build_twin_teacher
    from ..teachers.formats import convert_teacher

    cfg = _spec(spec)
    found = cfg.teacher(teacher)
    if found.convert_from:
        convert_teacher(found.convert_from, out)
    elif found.control_of:
        build_twin_teacher(found, cfg.teacher(found.control_of), out)
    else:
        build_random_teacher(found, tokenizer, out)


@command
def teacher_features(spec: str, teacher: str, data: str, split: str, out: str, threads: Threads = None) -> None:
    """Cache a teacher's features for one split: pooled, or per span where the spec's repa.alignment is tokenwise.

    Args:
        spec: the job's config slice as JSON (specs.teacher_spec)
        teacher: the teacher's name in the config
        data: the data folder (token arrays, manifest.json, tokenizer/)
        split: the split to encode (train or val)
        out: the features file to write (<out>.npy, with its manifest beside it as .json)
        threads: torch's CPU threads (default: torch's own)
    """
    import torch

    from ..data.dataset import load_tokenizer, open_split, read_manifest
    from ..teachers.teacher import Teacher, compute_feature_cache
    from ..teachers.tokenwise import compute_span_cache

    _threads(threads)
    _pin_one_gpu()
    started = time.perf_counter()
    cfg = _spec(spec)
    tokens = open_split(data, split, verify=True)
    sha = read_manifest(data)["splits"][split]["sha256"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = Teacher(cfg.teacher(teacher), load_tokenizer(Path(data) / "tokenizer"), device)
    compute = compute_span_cache if cfg.repa.alignment == "tokenwise" else compute_feature_cache
    print(json.dumps(compute(encoder, tokens, sha, out, started_at=started)))


@command
def train(spec: str, cell: str, data: str, run_dir: str, features: str | None = None, threads: Threads = None,
          nproc: int | None = None, stop_at_step: int | None = None, prefetch_batches: int | None = None,
          compile: Annotated[int | None, Option(tuple(range(len(COMPILE_MODES))), COMPILE_MODES)] = None,
          activation_checkpointing: Literal[0, 1] | None = None, tracking: str | None = None,
          rung_step: int | None = None, rung_record: str | None = None) -> None:
    """Train one cell (resumes from its checkpoint).

    The last three options are speed-only settings (specs.THROUGHPUT_ONLY_TRAIN_KEYS): they are not
    in --spec, so changing them never re-runs a cell (see workflow/rules/train.smk). Left out, the
    spec's own value holds.

    Args:
        spec: the job's config slice as JSON (specs.cell_spec)
        cell: the cell's name, e.g. baseline_s0 or minilm_L2_w0.50_s0
        data: the data folder (token arrays, manifest.json, tokenizer/)
        run_dir: the cell's run folder (checkpoints, logs, the trained model)
        features: the teacher's feature folder (cached mode); empty for none
        threads: torch's CPU threads (default: torch's own)
        nproc: GPUs for this cell (the rule passes resources.train.gpus): 0 runs on the CPU, N >= 1 needs N
            visible CUDA devices and refuses to start without them, N > 1 relaunches under torchrun (DDP).
            Left out: whatever device is visible
        stop_at_step: behave as if preempted after this step (testing)
        prefetch_batches: batches loaded ahead of the training step, as train.prefetch_batches
        compile: train.compile as its integer code
        activation_checkpointing: train.activation_checkpointing as 0 or 1
        tracking: the tracking section as JSON (TensorBoard, W&B); it is in no spec, so it never re-runs a
            cell. Left out: no tracking
        rung_step: successive halving: train only to this step (a rung's), keeping the checkpoint there
        rung_record: with rung_step: where the rung's record goes (its validation PPL at the step)
    """
    from ..training.distributed import relaunch_with_torchrun, require_gpus
    from ..training.trainer import train_cell

    if (nproc or 1) > 1 and "WORLD_SIZE" not in os.environ:
        require_gpus(nproc, "resources.train.gpus")  # before torchrun starts N ranks (exec ends this process)
    relaunch_with_torchrun(nproc, sys.argv[1:])
    _threads(threads)
    if (nproc or 1) <= 1:
        _pin_one_gpu()
    require_gpus(nproc, "resources.train.gpus")  # before anything is built or written
    cfg = _with_tracking(_spec(spec), tracking)
    codes = {"prefetch_batches": prefetch_batches, "compile": compile,
             "activation_checkpointing": activation_checkpointing}
    for key in THROUGHPUT_ONLY_TRAIN_KEYS:
        if codes[key] is not None:
            apply_throughput_setting_code(cfg.train, key, codes[key])
    if rung_step is not None:
        from ..training.rungs import train_to_rung

        if not rung_record:
            sys.exit("--rung-step needs --rung-record: where the rung's record goes")
        print(json.dumps(train_to_rung(cfg, Cell.parse(cell), data, run_dir, features or None, rung_step, rung_record)))
        return
    print(json.dumps(train_cell(cfg, Cell.parse(cell), data, run_dir, features or None, stop_at_step)))


@command
def evaluate(spec: str, cell: str, data: str, run_dir: str, out: str, threads: Threads = None,
             tracking: str | None = None) -> None:
    """Test ELBO perplexity of one trained cell.

    Args:
        spec: the job's config slice as JSON (specs.cell_spec)
        cell: the cell's name, e.g. baseline_s0
        data: the data folder (token arrays, manifest.json, tokenizer/)
        run_dir: the cell's run folder, with its trained model
        out: the metrics.json to write
        threads: torch's CPU threads (default: torch's own)
        tracking: the tracking section as JSON, as for train: the test metrics and hyperparameters go to
            the cell's tracker run (TensorBoard's HParams, W&B's summary)
    """
    from ..evaluation.perplexity import evaluate_run
    from ..io import atomic_write_checked_json
    from ..training.tracking import track_evaluation

    _threads(threads)
    _pin_one_gpu()
    cfg, the_cell = _with_tracking(_spec(spec), tracking), Cell.parse(cell)
    metrics = evaluate_run(cfg, the_cell, run_dir, data)
    atomic_write_checked_json(out, metrics)
    track_evaluation(cfg, the_cell, run_dir, metrics)
    print(json.dumps(metrics))


@command
def zero_shot(spec: str, cell: str, data: str, run_dir: str, test_set: str, out: str, threads: Threads = None) -> None:
    """ELBO perplexity of one trained cell on a zero-shot set.

    Args:
        spec: the job's config slice as JSON (specs.zero_shot_spec)
        cell: the cell's name, e.g. baseline_s0
        data: the zero-shot set's data folder (its test.bin and manifest.json)
        run_dir: the cell's run folder, with its trained model
        test_set: the set's name (evaluate.extra_test_sets[*].name)
        out: the result to write (runs/<cell>/zero_shot/<set>.json)
        threads: torch's CPU threads (default: torch's own)
    """
    from ..evaluation.perplexity import zero_shot_run
    from ..io import atomic_write_checked_json

    _threads(threads)
    _pin_one_gpu()
    result = zero_shot_run(_spec(spec), Cell.parse(cell), run_dir, data, test_set)
    atomic_write_checked_json(out, result)
    print(json.dumps(result))


@command
def train_judge(spec: str, data: str, out: str, threads: Threads = None) -> None:
    """Train the causal judge of the generative evaluation on the train split (when no judge is configured).

    Args:
        spec: the job's config slice as JSON (specs.judge_spec)
        data: the data folder (token arrays, manifest.json, tokenizer/)
        out: the judge folder to write (model/ and judge.json)
        threads: torch's CPU threads (default: torch's own)
    """
    from ..evaluation.judge import fit_judge

    _threads(threads)
    _pin_one_gpu()
    print(json.dumps(fit_judge(_spec(spec), data, out)))


@command
def generative(spec: str, cell: str, data: str, run_dir: str, out: str, judge: str | None = None,
               threads: Threads = None) -> None:
    """Samples of one trained cell, their generative perplexity under the judge and their entropy.

    Args:
        spec: the job's config slice as JSON (specs.generative_spec)
        cell: the cell's name, e.g. baseline_s0
        data: the data folder (token arrays, manifest.json, tokenizer/)
        run_dir: the cell's run folder, with its trained model
        out: the generative.json to write
        judge: the trained judge's folder (when generative.judge.name_or_path is null)
        threads: torch's CPU threads (default: torch's own)
    """
    from ..evaluation.generative import generative_eval
    from ..io import atomic_write_checked_json

    _threads(threads)
    _pin_one_gpu()
    report = generative_eval(_spec(spec), Cell.parse(cell), run_dir, data, judge or None)
    atomic_write_checked_json(out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "texts"}))


# the results' subcommands (tables, figures, verdict, samples, status), registered after the jobs above
from . import cli_results  # noqa: E402, F401


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["benchmark"]:  # its own parser and help
        from ..bench.benchmark import main as benchmark_main

        return benchmark_main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = vars(build_parser().parse_args(argv))
    name, fn = args.pop("command"), args.pop("fn")
    from ..io import DataError
    from ..training.checkpoint import CheckpointError
    from ..training.trainer import NonFiniteLoss

    try:
        fn(**args)
    except ConfigError as e:
        print(f"repa-mdlm {name}: {e}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError, NonFiniteLoss) as e:
        print(f"repa-mdlm {name}: error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
