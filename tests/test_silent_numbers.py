"""Paths that ended in a wrong number, or in lost files, with no error (issue 25, items 4 and 5):
a training log edited after training, a standard error evaluation could not estimate, a GPU job on a
machine without one, and the GPU check's scratch folder. Each is refused, naming the file or key and
the fix, and nothing that is not the check's own is deleted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repa_mdlm.analysis.runs import collect_runs, read_log_rows, read_repa_curve, read_val_curve
from repa_mdlm.analysis.verdict import steps_to_baseline
from repa_mdlm.bench import gpu_check
from repa_mdlm.config import Cell
from repa_mdlm.config.specs import cell_spec
from repa_mdlm.evaluation.perplexity import summarize
from repa_mdlm.io import DataError
from repa_mdlm.reporting.table1 import read_cache_costs, table1, write_tables

from .conftest import REPO, tiny_config

BASELINE = Cell("baseline", None, None, 0)
STEPS = 12


# ------------------------------------------------------------------ training logs, as training wrote them

@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Path:
    """A real baseline cell's run folder: train_log.jsonl (rows at steps 0, 2, ..., 12; validation at
    0, 6, 12) and train_summary.json, written by the trainer, preempted at step 5 and resumed."""
    from repa_mdlm.training.trainer import Preempted, train_cell

    run = tmp_path_factory.mktemp("trained") / "runs" / BASELINE.name
    cfg = tiny_config(train={"steps": STEPS})
    with pytest.raises(Preempted):
        train_cell(cfg, BASELINE, data_dir, run, stop_at_step=5)
    train_cell(cfg, BASELINE, data_dir, run)
    return run


def _copy(trained: Path, tmp_path: Path, cell: str) -> Path:
    """The trained run's log and summary, as cell `cell`'s run folder; returns its log."""
    run = tmp_path / "runs" / cell
    run.mkdir(parents=True)
    for name in ("train_log.jsonl", "train_summary.json"):
        shutil.copyfile(trained / name, run / name)
    return run / "train_log.jsonl"


def _as_if_trained(log: Path) -> None:
    """Record the log's sha256 in its summary, as the trainer does when it writes them."""
    from repa_mdlm.io import atomic_write_checked_json, file_sha256

    summary = json.loads(log.with_name("train_summary.json").read_text())
    summary.pop("content_sha256", None)
    atomic_write_checked_json(log.with_name("train_summary.json"), {**summary, "train_log_sha256": file_sha256(log)})


def test_another_cells_log_copied_whole_over_a_log_is_refused(trained, data_dir, tmp_path):
    """Rows that each look right (the same steps), but not the ones this run's training wrote."""
    from repa_mdlm.training.trainer import train_cell

    other = tmp_path / "other"
    train_cell(tiny_config(train={"steps": STEPS, "lr": 2e-3}), BASELINE, data_dir, other)
    log = _copy(trained, tmp_path, BASELINE.name)
    assert read_log_rows(log)
    shutil.copyfile(other / "train_log.jsonl", log)
    for reader in (read_log_rows, read_val_curve, read_repa_curve):
        with pytest.raises(DataError, match=r"sha256 is not the one .*train_summary\.json recorded.*--forcerun train"):
            reader(log)


def _runs(cells: list[str]) -> pd.DataFrame:
    rows = [{"cell": c, "teacher": Cell.parse(c).teacher, "layer": Cell.parse(c).layer,
             "weight": Cell.parse(c).weight if Cell.parse(c).weight is not None else np.nan, "seed": 0,
             "test_ppl": 100.0} for c in cells]
    df = pd.DataFrame(rows)
    df["layer"] = pd.array(df["layer"], dtype="Int64")
    return df


def test_a_nan_row_appended_to_a_log_is_refused_not_read_as_a_step_that_trained(trained, tmp_path):
    """The issue's case: a row beyond the cell's trained steps gave steps_to_baseline a step that never
    trained. Now the log is refused, naming the file and the command that retrains the cell."""
    base = _copy(trained, tmp_path, BASELINE.name)
    repa_cell = "t_L2_w0.50_s0"
    repa = _copy(trained, tmp_path, repa_cell)
    # as the trainer wrote it, the log reads in full; so does the row of a skipped bad batch (logged by the
    # trainer with its non-finite loss)
    assert [r["step"] for r in read_log_rows(repa)] == list(range(0, STEPS + 1, 2))
    lines = repa.read_text().splitlines()
    skipped = {"step": 3, "loss": float("nan"), "nelbo": float("nan"), "repa": None, "lr": 1e-3,
               "grad_norm": float("inf"), "t_max": 0.9, "skipped": True}
    repa.write_text("\n".join(lines[:2] + [json.dumps(skipped)] + lines[2:]) + "\n")
    _as_if_trained(repa)
    assert read_val_curve(repa)["step"].tolist() == [0, 6, 12] and len(read_log_rows(repa)) == len(lines) + 1
    steps = steps_to_baseline(_runs([BASELINE.name, repa_cell]), {BASELINE.name: str(base), repa_cell: str(repa)})
    assert steps["final_step"].tolist() == [STEPS]
    with open(repa, "a") as f:
        f.write('{"step": 13, "val_ppl": NaN}\n{"step": 14, "val_ppl": 1.0}\n')
    with pytest.raises(DataError) as e:
        steps_to_baseline(_runs([BASELINE.name, repa_cell]), {BASELINE.name: str(base), repa_cell: str(repa)})
    message = str(e.value)
    assert f"{repa}:" in message and "step 13 is beyond the 12 steps the cell trained" in message
    assert f"snakemake {repa} --forcerun train" in message


@pytest.mark.parametrize("edit, problem", [
    (lambda rows: rows + ['{"step": 12, "val_ppl": 1.0}'], "step 12 comes after step 12"),
    (lambda rows: rows + ['{"step": 4, "val_ppl": 1.0}'], "step 4 comes after step 12"),
    (lambda rows: rows[:-1], "its last row is step 10, but the cell trained 12 steps"),
    (lambda rows: rows[:3] + [rows[3].replace('"loss": ', '"loss": NaN, "was": ')] + rows[4:], "loss = nan"),
    (lambda rows: [r.replace('"val_ppl": ', '"val_ppl": Infinity, "was": ') for r in rows], "val_ppl = inf"),
    (lambda rows: rows + ['{"step": 1'], "not a JSON row"),
    (lambda rows: rows[:1] + ['{"step": 1.5, "loss": 4.0}'] + rows[1:], "step = 1.5 is not a step number"),
    (lambda rows: rows[:1] + ['[1, 2]'] + rows[1:], "not a JSON object"),
    (lambda rows: [], "holds no rows"),
], ids=["last-step-again", "earlier-step", "cut-short", "nan-loss", "inf-val", "cut-line", "float-step",
        "not-an-object", "emptied"])
def test_a_log_edited_after_training_is_refused_by_every_reader(trained, tmp_path, edit, problem):
    log = _copy(trained, tmp_path, BASELINE.name)
    log.write_text("".join(line + "\n" for line in edit(log.read_text().splitlines())))
    for reader in (read_log_rows, read_val_curve, read_repa_curve):
        with pytest.raises(DataError, match="not the log training wrote|cut short|holds no rows") as e:
            reader(log)
        assert problem in str(e.value) and "--forcerun train" in str(e.value)


def test_the_figures_refuse_an_edited_log_too(trained, tmp_path):
    from repa_mdlm.reporting.plots import make_figures

    log = _copy(trained, tmp_path, BASELINE.name)
    with open(log, "a") as f:
        f.write('{"step": 121, "val_ppl": NaN}\n')
    runs = collect_runs(_write_metrics(tmp_path / "metrics", [_metrics("baseline", _draws(4, 4, 4.6))]))
    with pytest.raises(DataError, match="step 121 is beyond the 12 steps"):
        make_figures(runs, {BASELINE.name: str(log)}, tmp_path / "figures")


# ------------------------------------------------------------------ Table 1 takes no NaN it cannot explain

def _metrics(teacher: str, draws: np.ndarray, layer=None, weight=None, **extra) -> dict:
    """A metrics.json as evaluate writes it, from the N-ELBO draws [sequences, t draws] (evaluation.perplexity.summarize)."""
    cell = Cell(teacher, layer, weight, 0).name
    return {"cell": cell, "teacher": teacher, "layer": layer, "weight": weight, "seed": 0,
            **summarize(draws, 32), "t_draws": draws.shape[1], "train_wall_s": 100.0, "train_tokens_per_s": 1e5,
            "steps": 100, "step_seconds": 100.0, "teacher_features": None if teacher == "baseline" else "cached",
            **extra}


def _write_metrics(tmp_path: Path, ms: list[dict]) -> list[str]:
    paths = []
    for m in ms:
        p = tmp_path / "runs" / m["cell"] / "metrics.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(m))
        paths.append(str(p))
    return paths


def _draws(sequences: int, t_draws: int, level: float) -> np.ndarray:
    return level + 0.01 * np.arange(sequences * t_draws, dtype=float).reshape(sequences, t_draws)


def test_one_test_sequence_is_refused_by_aggregate_naming_the_cell_the_key_and_the_fix(tmp_path):
    """evaluate.sequences: 1 wrote NaN standard errors, and Table 1 showed a NaN Monte Carlo error."""
    paths = _write_metrics(tmp_path, [_metrics("baseline", _draws(1, 4, 4.6)),
                                      _metrics("ta", _draws(1, 4, 4.5), 2, 0.5)])
    with pytest.raises(DataError) as e:
        write_tables(collect_runs(paths), tmp_path / "tables")
    message = str(e.value)
    assert "runs/baseline_s0/metrics.json" in message and "test_nelbo_se = nan" in message
    assert "from 1 test sequence(s)" in message and "evaluate.sequences >= 2" in message
    assert "--forcerun evaluate" in message
    assert not (tmp_path / "tables").exists()
    # one diffusion time per sequence: the Monte Carlo error alone cannot be estimated, and is refused too
    one_draw = _write_metrics(tmp_path / "t1", [_metrics("baseline", _draws(4, 1, 4.6))])
    with pytest.raises(DataError, match=r"test_nelbo_mc_se = nan: .*from 4 test sequence\(s\) and 1 diffusion "
                                        r"time\(s\) each; set .*evaluate.t_draws >= 2"):
        collect_runs(one_draw)


@pytest.mark.parametrize("key, value", [("validation_seconds", float("nan")), ("test_nelbo_mc_se", float("nan")),
                                        ("startup_seconds", float("inf")), ("test_ppl_ci95", [float("nan"), 1.0])])
def test_a_nan_where_a_metrics_file_means_unknown_is_refused(tmp_path, key, value):
    """Unknown is written as null (or left out), never as NaN: a NaN is a number that went wrong."""
    m = _metrics("baseline", _draws(4, 4, 4.6), **{key: value})
    with pytest.raises(DataError, match=rf"baseline_s0/metrics.json: {key}"):
        collect_runs(_write_metrics(tmp_path, [m]))


def test_table1_refuses_a_cell_whose_number_is_not_finite_naming_cell_and_column(tmp_path):
    """A runs table built another way than from the metrics files is checked too, cell by cell."""
    runs = collect_runs(_write_metrics(tmp_path, [_metrics("baseline", _draws(4, 4, 4.6)),
                                                  _metrics("ta", _draws(4, 4, 4.5), 2, 0.5)]))
    runs.loc[runs["cell"] == "ta_L2_w0.50_s0", "step_seconds"] = np.nan
    with pytest.raises(DataError, match=r"cell ta_L2_w0.50_s0's step_seconds = nan is not a finite number > 0.*"
                                        r"runs/ta_L2_w0.50_s0/metrics.json --forcerun train"):
        table1(runs)


@pytest.mark.parametrize("wall", [float("nan"), -5.0, "12 s"])
def test_a_feature_cache_cost_that_is_not_a_number_of_seconds_is_refused(tmp_path, wall):
    manifest = tmp_path / "teachers" / "ta" / "features" / "train.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"teacher": "ta", "wall_s": wall}))
    with pytest.raises(DataError, match=r"train.json: wall_s = .* is not a finite number of seconds.*"
                                        r"--forcerun teacher_features"):
        read_cache_costs([str(manifest)])


# ------------------------------------------------------------------ a GPU job without a GPU

@pytest.mark.parametrize("gpus", [1, 2])
def test_a_train_job_that_asks_for_gpus_refuses_to_start_where_none_is_visible(data_dir, tmp_path, gpus):
    """resources.train.gpus: N reaches the job as --nproc N (workflow/rules/train.smk); with no CUDA
    device visible it trained on the CPU without a word."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "repa_mdlm", "train", "--spec", json.dumps(cell_spec(tiny_config(), BASELINE)),
           "--cell", BASELINE.name, "--data", str(data_dir), "--run-dir", str(run), "--threads", "1",
           "--nproc", str(gpus)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(cmd, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"resources.train.gpus = {gpus}, but no CUDA device is visible (CUDA_VISIBLE_DEVICES=''" in proc.stderr
    assert "Set resources.train.gpus: 0 to run on the CPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not run.exists()  # refused before anything was built or written


def test_a_multi_gpu_train_job_relaunches_as_a_torchrun_that_parses():
    """`--nproc 2` relaunched as torchrun, whose own parser took --nproc for its --nproc-per-node and
    refused to start ("ambiguous option"): a multi-GPU cell never trained. Checked with torchrun's parser."""
    from torch.distributed.run import get_args_parser

    from repa_mdlm.training.distributed import torchrun_command

    argv = ["train", "--spec", "{}", "--cell", "baseline_s0", "--data", "d", "--run-dir", "r", "--features=",
            "--threads", "16", "--nproc", "2", "--tracking", "{}"]
    cmd = torchrun_command(2, argv)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    parsed = get_args_parser().parse_args(cmd[3:])
    assert (parsed.nproc_per_node, parsed.module, parsed.training_script) == ("2", True, "repa_mdlm")
    assert parsed.training_script_args == [a for a in argv if a not in ("--nproc", "2")]
    assert get_args_parser().parse_args(torchrun_command(2, [*argv[:-4], "--nproc=2"])[3:]).training_script_args \
        == argv[:-4]


def test_an_empty_cuda_visible_devices_is_never_overridden(tmp_path, monkeypatch):
    """CUDA_VISIBLE_DEVICES='' hides every GPU on purpose; a workstation job must not claim one anyway."""
    from repa_mdlm.training.distributed import claim_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert claim_gpu(2, tmp_path / "locks") is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


# ------------------------------------------------------------------ the GPU check deletes only its own files

def _no_run(args):
    raise AssertionError(f"the cell stage ran {args[3]} in a folder it should have refused")


def test_the_cell_stage_refuses_a_work_folder_holding_files_it_did_not_make(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "keep.txt").write_text("precious")
    (work / "notes" / "a.md").write_text("mine")
    monkeypatch.setattr(gpu_check, "_run", _no_run)
    assert gpu_check.main(["cell", "--out", str(tmp_path / "out"), "--work", str(work), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert f"--work {work} holds files the GPU check did not make (keep.txt, notes)" in err
    assert (work / "keep.txt").read_text() == "precious" and (work / "notes" / "a.md").read_text() == "mine"
    # nor does `clean` touch it
    assert gpu_check.main(["clean", "--out", str(tmp_path / "out"), "--work", str(work)]) == 0
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "notes"]


def test_a_work_folder_the_check_made_is_emptied_of_what_it_made_and_nothing_else(tmp_path, monkeypatch):
    """A run cut short leaves its scratch (here: the data and a partial training log); the next run
    reuses the folder, and `clean` deletes only the check's entries and its mark."""
    real_run = gpu_check._run

    def cut_short(args):
        if args[3] != "train":
            return real_run(args)
        run_dir = Path(args[args.index("--run-dir") + 1])
        run_dir.mkdir(parents=True)
        (run_dir / "train_log.partial.jsonl").write_text(json.dumps({"step": 1, "tokens_per_s": 1.0}) + "\n")
        raise RuntimeError("repa-mdlm train exited 143")

    monkeypatch.setattr(gpu_check, "_run", cut_short)
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    for _ in range(2):  # the second run finds the first one's marked scratch and starts afresh in it
        with pytest.raises(RuntimeError, match="exited 143"):
            gpu_check.cell(out, work, smoke=True)
        assert (work / gpu_check.WORK_MARK).is_file() and (work / gpu_check.SWEEP / "runs").is_dir()
    (work / "added-later.txt").write_text("someone's")
    assert gpu_check.clean_work(work) == ["added-later.txt"]
    assert sorted(p.name for p in work.iterdir()) == ["added-later.txt"]
    # an empty folder given to it stays, emptied again, after the check
    given = tmp_path / "given"
    given.mkdir()
    gpu_check.claim_work(given)
    (given / gpu_check.SWEEP / "data").mkdir(parents=True)
    assert gpu_check.clean_work(given) == [] and given.is_dir() and not any(given.iterdir())


def test_the_scripts_clean_up_deletes_only_a_folder_the_check_marked(tmp_path):
    """`GPU_CHECK_WORK=DIR scripts/gpu-check.sh` ran `rm -rf DIR` after the cell stage, whatever DIR held.
    The cell stage is cut to an immediate failure here; only the clean-up after it is under test."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nif [ \"$2\" = repa_mdlm.bench.gpu_check ] && [ \"$3\" = cell ]; then exit 3; fi\n"
                    f"exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    script = (REPO / "scripts" / "gpu-check.sh").read_text()
    cut = script[:script.index("stage env ")] + script[script.index("stage cell "):]
    short = tmp_path / "gpu-check.sh"
    short.write_text(cut.replace('cd "$(dirname "$0")/.."', f'cd "{REPO}"'))

    def run(work: Path):
        return subprocess.run(["bash", str(short), "--smoke", "--out", str(tmp_path / "out")], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "GPU_CHECK_WORK": str(work)})

    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    proc = run(foreign)
    assert proc.returncode == 1 and "| cell | 3 |" in (tmp_path / "out" / "summary.md").read_text(), proc.stdout
    assert (foreign / "thesis.tex").read_text() == "years of work"
    # the scratch a killed cell stage left behind is the check's own: removed
    left = tmp_path / "scratch"
    gpu_check.claim_work(left)
    (left / gpu_check.SWEEP / "runs" / "baseline_s0").mkdir(parents=True)
    run(left)
    assert not left.exists()
