"""`repa-mdlm <step>` for what turns finished cells into results: tables, figures, the verdict,
samples and the sweep's status. Registered beside the sweep's jobs (cli.py) by `@command`; each
function's typed signature and "Args:" section are its command line (arguments.py)."""

from __future__ import annotations

import sys
from typing import Annotated

from ..config.sampling import SAMPLING
from .arguments import Option, Threads, _threads, command
from .status import STATES


@command
def aggregate(metrics: list[str], out_dir: str, features: list[str] = (), halving: list[str] = ()) -> None:
    """Runs table and Table 1 from every cell's metrics.json.

    Args:
        metrics: every cell's metrics.json
        out_dir: the tables folder to write
        features: teacher feature manifests (.json), for the cache cost
        halving: a halving sweep's tables/halving.csv: Table 1 says how many configurations stopped where
    """
    from ..reporting.table1 import aggregate_main

    aggregate_main(metrics, out_dir, features, halving[0] if halving else None)


@command
def judge_rung(records: list[str], rung: int, eta: int, out: str) -> None:
    """One rung of successive halving: rank the configurations by their seeds' mean validation PPL and
    keep the best ceil(n / eta) (ties kept, at least one); one CSV row per cell.

    Args:
        records: the rung records (runs/<cell>/halving/step<S>.json) of the configurations still running
        rung: the rung's number (1 = the first)
        eta: keep 1/eta of the configurations
        out: the decisions' CSV (tables/halving/rung<k>.csv)
    """
    from ..analysis.halving import judge_rung_main

    decisions = judge_rung_main(records, rung, eta, out)
    print(f"rung {rung}: {sum(d.kept for d in decisions)} of {len(decisions)} configurations go on ({out})")


@command
def halving_report(decisions: list[str], out_dir: str, steps: int, baselines: int, eta: int,
                   stopped: list[str] = (), logs: list[str] = (), figures_dir: str | None = None) -> None:
    """tables/halving.{csv,md,html}: every rung's decisions, the configurations that reached the end and
    the training steps spent.

    Args:
        decisions: every rung's tables/halving/rung<k>.csv, in rung order
        out_dir: the tables folder to write
        steps: train.steps (the end)
        baselines: the baseline cells, which run to the end
        eta: the sweep's halving.eta
        stopped: the rung records of the stopped cells, at the rung they stopped (for the figure)
        logs: the training logs of the cells that reached the end (for the figure)
        figures_dir: where the figure goes (none: no figure)
    """
    from ..reporting.halving_report import halving_report_main

    halving_report_main(decisions, out_dir, steps, baselines, eta, stopped, logs, figures_dir)


@command
def figures(runs: str, logs: list[str], out_dir: str, teachers: list[str] | None = None) -> None:
    """Figures 2-8 from the runs table and training logs.

    Args:
        runs: the runs table (runs.parquet)
        logs: every cell's train_log.jsonl
        out_dir: the figures folder to write
        teachers: teacher names, in the config's order (default: as found in the runs table)
    """
    from ..reporting.plots import figures_main

    figures_main(runs, logs, out_dir, teachers)


@command
def zero_shot_report(results: list[str], tables_dir: str) -> None:
    """The zero-shot table: every cell's ELBO PPL on each extra test set, by teacher, against the baseline.

    Args:
        results: every cell's runs/<cell>/zero_shot/<set>.json
        tables_dir: the tables folder to write
    """
    from ..reporting.zero_shot_report import zero_shot_report_main

    for path in zero_shot_report_main(results, tables_dir):
        print(path)


@command
def generative_report(generative: list[str], runs: str, tables_dir: str, figures_dir: str) -> None:
    """The generative table by teacher and its two figures (gen-PPL vs entropy, ELBO PPL vs gen-PPL).

    Args:
        generative: every cell's generative.json
        runs: the runs table (runs.parquet), for each cell's ELBO PPL
        tables_dir: the tables folder to write
        figures_dir: the figures folder to write
    """
    from ..reporting.generative_report import generative_report_main

    for path in generative_report_main(generative, runs, tables_dir, figures_dir):
        print(path)


@command
def compare(runs: str, logs: list[str], out_dir: str, data: str | None = None, teachers: list[str] = (),
            features: list[str] = (), controls: list[str] = (), title: str = "REPA study",
            generative: list[str] = (), zero_shot: list[str] = (), target_effect_pct: float = 5.0,
            twins: list[str] = ()) -> None:
    """Paired comparison with the baseline (Holm-corrected), each teacher against its twin and the
    unmatched controls, their power, the teacher-feature probe and the verdict.

    Args:
        runs: the runs table (runs.parquet)
        logs: every cell's train_log.jsonl
        out_dir: the tables folder to write (beside Table 1)
        data: token arrays folder, for the unigram perplexity
        teachers: teacher names, in the order of --features
        features: each teacher's cached train features (.npy)
        controls: random-init control teachers
        title: the verdict's heading
        generative: every cell's generative.json, for the paired gen. PPL and entropy
        zero_shot: every cell's zero-shot results (runs/<cell>/zero_shot/<set>.json)
        target_effect_pct: the difference the power section sizes seeds for, in % of the reference's mean
        twins: each teacher and its matched random twin (control_of), as teacher:twin
    """
    from ..analysis.verdict import compare_main

    compare_main(runs, logs, data, teachers, features, controls, out_dir, title, generative, zero_shot,
                 target_effect_pct, twins)


@command
def report_pages(sources: list[str], out_dir: str, titles: list[str] = ()) -> None:
    """Markdown (.md) and CSV (.csv) files as pages of the HTML report, in Table 1's style: <out-dir>/<stem>.html.

    Args:
        sources: the files to show (the verdict.md and the comparison's CSV files)
        out_dir: the folder to write the pages to (the tables folder)
        titles: one title per source (a Markdown page keeps its own first heading)
    """
    from ..reporting.pages import report_pages_main

    for path in report_pages_main(sources, out_dir, titles):
        print(path)


@command
def sample(run_dir: str, data: str, out: str, n_samples: int = SAMPLING.n_samples, steps: int = SAMPLING.steps,
           seed: int = SAMPLING.seed, seq_len: int | None = None, threads: Threads = None) -> None:
    """Text samples of one trained cell (MDLM ancestral sampler), as markdown.

    Args:
        run_dir: the cell's run folder, with its trained model
        data: the data folder (manifest.json, tokenizer/)
        out: the markdown file to write
        n_samples: sequences to sample
        steps: denoising steps of the sampler
        seed: seed of the sampler's random draws
        seq_len: sampled sequence length (default: the data's sequence length)
        threads: torch's CPU threads (default: torch's own)
    """
    from ..reporting.samples import write_samples

    _threads(threads)
    print(write_samples(run_dir, data, out, n_samples, steps, seed, seq_len))


@command
def report_samples(metrics: list[str], data: str, out_md: str, out_html: str, n_samples: int = SAMPLING.n_samples,
                   steps: int = SAMPLING.steps, seed: int = SAMPLING.seed, threads: Threads = None) -> None:
    """Samples of the best REPA cell and the baseline, for the report.

    Args:
        metrics: every cell's metrics.json (the best cell is picked from them)
        data: the data folder (manifest.json, tokenizer/)
        out_md: the markdown file to write
        out_html: the HTML file to write
        n_samples: sequences to sample per cell
        steps: denoising steps of the sampler
        seed: seed of the sampler's random draws
        threads: torch's CPU threads (default: torch's own)
    """
    from ..reporting.samples import write_report_samples

    _threads(threads)
    for path in write_report_samples(metrics, data, out_md, out_html, n_samples, steps, seed):
        print(path)


@command
def export(run_dir: str, out_dir: str, data: str | None = None) -> None:
    """One trained cell as a folder anyone can load: model, tokenizer (with its mask token), config,
    metrics and a model card (README.md). Push it to a hub yourself: `hf upload <user>/<name> <out-dir> .`

    Args:
        run_dir: the cell's run folder (results/runs/<cell>), with its trained model
        out_dir: the folder to write (new or empty)
        data: the data folder with the student tokenizer (default: the sweep's, beside runs/)
    """
    from .export import export_cell

    print(export_cell(run_dir, out_dir, data))


@command
def simulate_halving(configfile: list[str] = ("config.yaml",), results_dir: str | None = None, eta: int | None = None,
                     rungs: list[float] | None = None, out_dir: str | None = None) -> None:
    """What successive halving would have kept of a finished full grid, from its own validation logs.

    Args:
        configfile: the sweep's config file(s), merged in order as Snakemake merges --configfile
        results_dir: override the config's results_dir
        eta: keep the best 1/eta of the configurations at each rung (default: the config's halving.eta)
        rungs: fractions of train.steps at which the configurations are judged, the last 1.0 (default: halving.rungs)
        out_dir: where halving_simulated.{csv,md} go (default: the sweep's tables folder)
    """
    from pathlib import Path

    from .. import layout
    from ..analysis.halving import simulate_main
    from ..config.loading import load_config

    cfg = load_config(list(configfile), overrides={"results_dir": results_dir} if results_dir else None)
    runs = [Path(layout.run_dir(cfg.results_dir, c.name)) for c in cfg.cells()]
    unfinished = [r.name for r in runs if not (r / layout.TRAIN_SUMMARY).exists() or not (r / layout.METRICS).exists()]
    if unfinished:
        sys.exit(f"simulate-halving needs the full grid finished; not yet: {', '.join(unfinished[:5])}"
                 + (f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else "") + " (run the sweep first)")
    out = out_dir or f"{cfg.results_dir}/{layout.TABLES}"
    simulate_main([str(r / layout.TRAIN_LOG) for r in runs], [str(r / layout.METRICS) for r in runs], out,
                  eta or cfg.halving.eta, list(rungs or cfg.halving.rungs), cfg.train.steps, cfg.train.val_every)
    print(Path(out, "halving_simulated.md").read_text(), end="")


H100_SECONDS_PER_STEP = 1.25
"""One paper step (512 x 256 tokens, eager) on an H100 SXM: docs/benchmarks.md's estimate, not a measurement."""


@command
def plan_cost(configfile: list[str] = ("config.yaml",), eta: int | None = None, rungs: list[float] | None = None,
              seconds_per_step: float = H100_SECONDS_PER_STEP) -> None:
    """The grid's training steps and GPU-hours, in full and with successive halving (its least: ties add).

    Args:
        configfile: the sweep's config file(s), merged in order as Snakemake merges --configfile
        eta: keep the best 1/eta of the configurations at each rung (default: the config's halving.eta)
        rungs: fractions of train.steps at which the configurations are judged, the last 1.0 (default: halving.rungs)
        seconds_per_step: one optimisation step on the GPU (default: docs/benchmarks.md's eager H100 estimate at the paper's shape)
    """
    from ..analysis.halving import configuration_of, planned_steps, rung_steps
    from ..config.loading import load_config

    cfg = load_config(list(configfile))
    eta, rungs = eta or cfg.halving.eta, rungs or cfg.halving.rungs
    cells = cfg.cells()
    configurations = {configuration_of(c) for c in cells if not c.is_baseline}
    baselines = sum(c.is_baseline for c in cells)
    at = rung_steps(list(rungs), cfg.train.steps, cfg.train.val_every)
    full = len(cells) * cfg.train.steps
    halved = planned_steps(len(configurations), len(cfg.seeds), baselines, at, eta)
    hours = lambda steps: steps * seconds_per_step / 3600  # noqa: E731
    print(f"{len(cells)} cells ({len(configurations)} configurations x {len(cfg.seeds)} seed(s), {baselines} baseline), "
          f"{cfg.train.steps} steps each, {seconds_per_step:g} s per step")
    print(f"full grid:  {full:>12,} steps  {hours(full):10.1f} GPU-hours")
    print(f"halving:    {halved:>12,} steps  {hours(halved):10.1f} GPU-hours  ({100 * halved / full:.1f} %; eta {eta}, "
          f"rungs at steps {at}; at least this: ties keep more)")


@command
def status(configfile: list[str] = ("config.yaml",), results_dir: str | None = None,
           state: Annotated[list[str] | None, Option(STATES, nargs="+")] = None, targets: bool = False) -> None:
    """Every cell of the grid: done / running / kept / stopped / failed / preempted / not started.

    Args:
        configfile: the sweep's config file(s), merged in order as Snakemake merges --configfile
        results_dir: override the config's results_dir
        state: only cells in these states
        targets: print the cells' metrics.json paths (for snakemake)
    """
    from ..config.loading import load_config
    from .results_lock import describe, live_writer
    from .status import format_table, sweep_status

    cfg = load_config(list(configfile), overrides={"results_dir": results_dir} if results_dir else None)
    rows = sweep_status(cfg)
    writer = live_writer(cfg.results_dir)
    if writer:
        print(f"written now by {describe(writer)}", file=sys.stderr if targets else sys.stdout)
    if state:
        rows = [r for r in rows if r.state in state]
    if targets:
        print("\n".join(f"{cfg.results_dir}/{r.target}" for r in rows))
    else:
        print(format_table(rows))
