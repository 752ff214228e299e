"""`repa-mdlm <step>`: the thin entry points the Snakemake rules call.

Jobs receive their slice of the config as JSON (`--spec`), built by config.*_spec.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .config import COMPILE_MODES, Cell, Config, ConfigError
from .specs import THROUGHPUT_ONLY_TRAIN_KEYS, apply_throughput_setting_code
from .status import STATES


def _spec(text: str) -> Config:
    return Config.from_dict(json.loads(text), job_spec=True)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


_GPU_LOCK = None


def _pin_one_gpu() -> None:
    """On a multi-GPU workstation (no Slurm, no CUDA_VISIBLE_DEVICES), take a free GPU of
    our own so concurrent jobs never share one."""
    global _GPU_LOCK
    from .distributed import claim_gpu, visible_gpu_count

    if "WORLD_SIZE" not in os.environ:
        _GPU_LOCK = claim_gpu(visible_gpu_count())


def cmd_check_config(a) -> None:
    from .config_loading import load_config

    cfg = load_config(a.config)
    cells = cfg.cells()
    print(f"{a.config}: valid; {len(cells)} training cells "
          f"(baseline x {len(cfg.seeds)} seeds + {len(cfg.repa.teachers)} teachers x {len(cfg.repa.layers)} layers "
          f"x {len(cfg.repa.weights)} weights x {len(cfg.seeds)} seeds)")


def cmd_tokenizer(a) -> None:
    from .data import prepare_tokenizer

    cfg = _spec(a.spec)
    prepare_tokenizer(cfg.tokenizer, cfg.corpus, a.out)


def cmd_tokenize(a) -> None:
    from .data import tokenize_and_pack

    cfg = _spec(a.spec)
    manifest = tokenize_and_pack(cfg.corpus, a.tokenizer, cfg.seq_len, a.out)
    print(json.dumps({s: {k: v for k, v in i.items() if k != "sha256"} for s, i in manifest["splits"].items()}))


def cmd_build_teacher(a) -> None:
    from .teacher_formats import convert_teacher
    from .teachers import build_random_teacher

    teacher = _spec(a.spec).teacher(a.teacher)
    if teacher.convert_from:
        convert_teacher(teacher.convert_from, a.out)
    else:
        build_random_teacher(teacher, a.tokenizer, a.out)


def cmd_teacher_features(a) -> None:
    import torch

    from .data import load_tokenizer, open_split, read_manifest
    from .teachers import Teacher, compute_feature_cache

    _threads(a.threads)
    _pin_one_gpu()
    started = time.perf_counter()
    cfg = _spec(a.spec)
    tokens = open_split(a.data, a.split, verify=True)
    sha = read_manifest(a.data)["splits"][a.split]["sha256"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = Teacher(cfg.teacher(a.teacher), load_tokenizer(Path(a.data) / "tokenizer"), device)
    meta = compute_feature_cache(teacher, tokens, sha, a.out, started_at=started)
    print(json.dumps(meta))


def cmd_train(a) -> None:
    from .distributed import relaunch_with_torchrun
    from .train import train_cell

    relaunch_with_torchrun(a.nproc, sys.argv[1:])
    _threads(a.threads)
    if a.nproc <= 1:
        _pin_one_gpu()
    cfg = _spec(a.spec)
    for key in THROUGHPUT_ONLY_TRAIN_KEYS:
        if getattr(a, key) is not None:
            apply_throughput_setting_code(cfg.train, key, getattr(a, key))
    summary = train_cell(cfg, Cell.parse(a.cell), a.data, a.run_dir, a.features or None, a.stop_at_step)
    print(json.dumps(summary))


def cmd_evaluate(a) -> None:
    from .evaluate import evaluate_run
    from .io import atomic_write_checked_json

    _threads(a.threads)
    _pin_one_gpu()
    metrics = evaluate_run(_spec(a.spec), Cell.parse(a.cell), a.run_dir, a.data)
    atomic_write_checked_json(a.out, metrics)
    print(json.dumps(metrics))


def cmd_aggregate(a) -> None:
    from .table1 import aggregate_main

    aggregate_main(a.metrics, a.out_dir, a.features)


def cmd_figures(a) -> None:
    from .plots import figures_main

    figures_main(a.runs, a.logs, a.out_dir, a.teachers)


def cmd_compare(a) -> None:
    from .compare import compare_main

    compare_main(a.runs, a.logs, a.data, a.teachers, a.features, a.controls, a.out_dir, a.title)


def cmd_sample(a) -> None:
    from .sample import write_samples

    _threads(a.threads)
    print(write_samples(a.run_dir, a.data, a.out, a.n_samples, a.steps, a.seed, a.seq_len))


def cmd_report_samples(a) -> None:
    from .sample import write_report_samples

    _threads(a.threads)
    for path in write_report_samples(a.metrics, a.data, a.out_md, a.out_html, a.n_samples, a.steps, a.seed):
        print(path)


def cmd_status(a) -> None:
    from .config_loading import load_config
    from .status import format_table, sweep_status

    cfg = load_config(a.configfile, overrides={"results_dir": a.results_dir} if a.results_dir else None)
    from .results_lock import describe, live_writer

    rows = sweep_status(cfg)
    writer = live_writer(cfg.results_dir)
    if writer:
        print(f"written now by {describe(writer)}", file=sys.stderr if a.targets else sys.stdout)
    if a.state:
        rows = [r for r in rows if r.state in a.state]
    if a.targets:
        print("\n".join(f"{cfg.results_dir}/{r.target}" for r in rows))
    else:
        print(format_table(rows))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="repa-mdlm", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        s = sub.add_parser(name, help=help_)
        s.set_defaults(fn=fn)
        return s

    _add_pipeline_steps(add)
    _add_results_steps(add)
    sub.add_parser("benchmark", help="training-step benchmark: tokens/s, MFU, REPA overhead (see `repa-mdlm benchmark -h`)")
    s = add("status", cmd_status, "every cell of the grid: done / running / failed / preempted / not started")
    s.add_argument("--configfile", default="config.yaml")
    s.add_argument("--results-dir", help="override the config's results_dir")
    s.add_argument("--state", nargs="+", choices=STATES,
                   help="only cells in these states")
    s.add_argument("--targets", action="store_true", help="print the cells' metrics.json paths (for snakemake)")
    return p


def _sampling_args(s) -> None:
    """The sampler's settings, shared by `sample` and `report-samples`."""
    s.add_argument("--n-samples", type=int, default=4)
    s.add_argument("--steps", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int)


def _add_pipeline_steps(add) -> None:
    """The jobs of one sweep, in DAG order: config, data, teachers, training, evaluation."""
    s = add("check-config", cmd_check_config, "validate a config file and print the grid size")
    s.add_argument("--config", required=True)
    s = add("tokenizer", cmd_tokenizer, "load or train the student tokenizer, with a mask token")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True)
    s = add("tokenize", cmd_tokenize, "tokenize and pack the corpus into train/val/test arrays")
    s.add_argument("--spec", required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    s = add("build-teacher", cmd_build_teacher, "materialise a teacher from init_from_config or convert_from")
    s.add_argument("--spec", required=True)
    s.add_argument("--teacher", required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    s = add("teacher-features", cmd_teacher_features, "cache a teacher's pooled features for one split")
    for arg in ("--spec", "--teacher", "--data", "--split", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--threads", type=int)
    s = add("train", cmd_train, "train one cell (resumes from its checkpoint)")
    for arg in ("--spec", "--cell", "--data", "--run-dir"):
        s.add_argument(arg, required=True)
    s.add_argument("--features", help="the teacher's feature folder (cached mode); empty for none")
    s.add_argument("--threads", type=int)
    s.add_argument("--nproc", type=int, default=1, help="GPUs for this cell: >1 relaunches under torchrun (DDP)")
    s.add_argument("--stop-at-step", type=int, help="behave as if preempted after this step (testing)")
    # speed-only settings (specs.THROUGHPUT_ONLY_TRAIN_KEYS): not in --spec, see workflow/rules/common.smk
    s.add_argument("--prefetch-batches", type=int)
    s.add_argument("--compile", type=int, choices=range(len(COMPILE_MODES)),
                   help=" | ".join(f"{i}: {m}" for i, m in enumerate(COMPILE_MODES)))
    s.add_argument("--activation-checkpointing", type=int, choices=[0, 1])
    s = add("evaluate", cmd_evaluate, "test ELBO perplexity of one trained cell")
    for arg in ("--spec", "--cell", "--data", "--run-dir", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--threads", type=int)


def _add_results_steps(add) -> None:
    """What turns finished cells into tables, figures, the verdict and samples."""
    s = add("aggregate", cmd_aggregate, "runs table and Table 1 from every cell's metrics.json")
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--features", nargs="*", default=[], help="teacher feature manifests (.json), for the cache cost")
    s.add_argument("--out-dir", required=True)
    s = add("figures", cmd_figures, "Figures 2-8 from the runs table and training logs")
    s.add_argument("--runs", required=True)
    s.add_argument("--logs", nargs="+", required=True)
    s.add_argument("--teachers", nargs="*")
    s.add_argument("--out-dir", required=True)
    s = add("compare", cmd_compare, "paired comparison with the baseline, teacher-feature probe and the verdict")
    s.add_argument("--runs", required=True)
    s.add_argument("--logs", nargs="+", required=True)
    s.add_argument("--data", help="token arrays folder, for the unigram perplexity")
    s.add_argument("--teachers", nargs="*", default=[], help="teacher names, in the order of --features")
    s.add_argument("--features", nargs="*", default=[], help="each teacher's cached train features (.npy)")
    s.add_argument("--controls", nargs="*", default=[], help="random-init control teachers")
    s.add_argument("--title", default="REPA study")
    s.add_argument("--out-dir", required=True)
    s = add("sample", cmd_sample, "text samples of one trained cell (MDLM ancestral sampler), as markdown")
    for arg in ("--run-dir", "--data", "--out"):
        s.add_argument(arg, required=True)
    _sampling_args(s)
    s.add_argument("--seq-len", type=int, help="default: the data's sequence length")
    s = add("report-samples", cmd_report_samples, "samples of the best REPA cell and the baseline, for the report")
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out-md", required=True)
    s.add_argument("--out-html", required=True)
    _sampling_args(s)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["benchmark"]:  # its own parser and help
        from .benchmark import main as benchmark_main

        return benchmark_main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .io import DataError
    from .train import NonFiniteLoss

    try:
        args.fn(args)
    except ConfigError as e:
        print(f"repa-mdlm {args.command}: {e}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError, NonFiniteLoss) as e:
        print(f"repa-mdlm {args.command}: error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
