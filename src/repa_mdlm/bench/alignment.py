"""Paired step times of the alignment arms, in one run: the baseline, pooled and token-wise REPA, each
with cached and online teacher features, one training step of each in turn at the same step index (so
the same batch, times and masks), on a sweep's real data and teacher.

    python -m repa_mdlm.bench.alignment --configfile config/study.yaml config/study-tokenwise.yaml \\
        --results results/study --teacher e5-pt --steps 30 --append docs/benchmarks.md

The sweep's data and the teacher's pooled and token-wise train features must exist (snakemake
<results>/teachers/<t>/features/train.npy <results>/teachers/<t>/features-tokenwise/train.npy).
A benchmark, not a test: it prints a Markdown table (and appends it with --append).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..config import Cell
from ..config.loading import load_config
from ..layout import DATA, teacher_features_dir


def variants(cfg, teacher: str, tokenwise_tag: str) -> dict[str, tuple]:
    """name -> (config, cell, features folder or None) of each arm at the first layer, weight and seed."""
    layer, weight, seed = cfg.repa.layers[0], float(cfg.repa.weights[0]), cfg.seeds[0]
    online = dataclasses.replace(cfg, teacher_features="online")
    pooled, tokenwise = Cell(teacher, layer, weight, seed), Cell(f"{teacher}+{tokenwise_tag}", layer, weight, seed)
    return {
        "baseline": (cfg, Cell("baseline", None, None, seed), None),
        "pooled, cached": (cfg, pooled, teacher_features_dir(cfg.results_dir, teacher)),
        "pooled, online": (online, pooled, None),
        "token-wise, cached": (cfg, tokenwise, teacher_features_dir(cfg.results_dir, teacher, "tokenwise")),
        "token-wise, online": (online, tokenwise, None),
    }


def main(argv: list[str] | None = None) -> int:
    from ..training.trainer import Trainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", nargs="+", required=True)
    p.add_argument("--results", required=True, help="the sweep's results_dir (its data and feature caches)")
    p.add_argument("--teacher", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a study job uses 1)")
    p.add_argument("--append", help="a Markdown file to append the table to")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load_config(a.configfile, overrides={"results_dir": a.results})
    tags = [arm.tag for arm, teachers, _, _ in cfg.repa.arms() if arm.alignment == "tokenwise"
            and a.teacher in {t.name for t in teachers}]
    if not tags:
        p.error(f"no token-wise arm of {a.configfile} has teacher {a.teacher!r} (repa.variants)")
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (c, cell, features) in variants(cfg, a.teacher, tags[0]).items():
            runs[name] = Trainer(c, cell, f"{a.results}/{DATA}", Path(scratch) / name.replace(", ", "-"), features)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for step in range(a.warmup + a.steps):
            for name, trainer in runs.items():  # the same step of each arm in turn: paired
                began = time.perf_counter()
                trainer.train_step(step)
                if step >= a.warmup:
                    times[name].append(time.perf_counter() - began)
    pooled = times["pooled, cached"]
    lines = [f"### Alignment arms, paired step times ({datetime.date.today()}, {platform.node() or 'cpu'})", "",
             f"`python -m repa_mdlm.bench.alignment {' '.join(argv if argv is not None else sys.argv[1:])}`: "
             f"{a.steps} steps of each arm after {a.warmup} warm-up steps, in turn at the same step index, "
             f"{a.threads} torch thread(s), torch {torch.__version__}; teacher {a.teacher}, token-wise arm "
             f"{tags[0]}, layer {cfg.repa.layers[0]}, batch {cfg.train.global_batch} x {cfg.seq_len}.", "",
             "| arm | median step (ms) | median ratio to pooled, cached (paired) | ratio's IQR |",
             "|---|---:|---:|---:|"]
    for name, t in times.items():
        ratios = sorted(x / y for x, y in zip(t, pooled))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        lines.append(f"| {name} | {1000 * statistics.median(t):.1f} | {statistics.median(ratios):.3f} | "
                     f"{q1:.3f}–{q3:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
