"""The Slurm profile (`snakemake --profile slurm`) against a real Slurm cluster.

Skipped unless a cluster answers (`sinfo`) with working accounting (`sacct`). On one machine:

    scripts/local-slurm.sh start && pytest -m slurm; scripts/local-slurm.sh stop    # or scripts/ci-slurm.sh

The cluster of scripts/local-slurm.sh has a default CPU partition and a node with two fake GPUs
(`Gres=gpu:fake:2`), and stores the job comment in accounting, which is how these tests map Slurm
jobs to rules and cells: snakemake-executor-plugin-slurm names every job of a run after the run's
UUID and sets `--comment rule_<rule>_wildcards_<wildcards>`.

1. the offline demo sweep through the profile: every table and figure, one Slurm job per cell for its
   training and one for everything after it (evaluation, samples, zero-shot sets: a group);
2. GPU requests become `--gpus=1` / `--gpus=<model>:1` and get a GPU on the fake-GPU node;
3. a failed member of a cell's post-training group keeps the others' outputs, and the next run
   submits only what is missing;
4. a training job killed by a real signal checkpoints, exits 75, is resubmitted by Snakemake and
   resumes, and ends bit-identical to an uninterrupted run of the same cell;
5. successive halving on the demo grid (config/halving-on.yaml): one rung job per cell and rung, the
   judge between, the cells it picked equal to halving simulated on the full demo's logs, survivors
   bit-identical to the full demo's.

Snakemake is always stopped with SIGINT (it then scancels its jobs), never killed outright.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO

# Status checks every 2 s instead of the profile's 20 s: the demo's jobs take seconds.
FAST = ["--slurm-init-seconds-before-status-checks", "2"]
TABLES = ("runs.parquet", "runs.csv", "table1.csv", "table1.md", "table1.tex")
FIGURES = ("fig2_training_curves", "fig3_teacher", "fig4_layer", "fig5_weight")
DEMO_CELLS = {"baseline_s0", "minilm+tok-mlp128_L3_w0.50_s0"} | {
    f"{t}_L{layer}_w{w}_s0" for t in ("minilm", "tiny-qwen3") for layer in (2, 3) for w in ("0.50", "1.00")}


def _cluster_answers() -> str | None:
    """None if a Slurm cluster with accounting answers, else why not."""
    for tool in ("sinfo", "sbatch", "sacct", "scancel"):
        if not shutil.which(tool):
            return f"no `{tool}` on PATH"
    try:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo/sacct do not answer"
    if nodes.returncode != 0 or not re.search(r"^(idle|mixed|allocated)", nodes.stdout, re.M):
        return f"no usable Slurm node (sinfo: {(nodes.stdout + nodes.stderr).strip()[:200]!r})"
    if acct.returncode != 0:
        return f"sacct fails (no accounting): {acct.stderr.strip()[:200]!r}"
    return None


_WHY_NOT = _cluster_answers()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(_WHY_NOT is not None,
                       reason=f"no Slurm cluster ({_WHY_NOT}); start one with `scripts/local-slurm.sh start`"),
]


# ------------------------------------------------------------------------------------ helpers
def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


class Snakemake:
    """`snakemake --profile slurm ...` in the background; output in a file, stopped with SIGINT."""

    def __init__(self, *args: str, log: Path, profile: bool = True):
        """Targets first: --configfile and --forcerun take every word that follows them."""
        cmd = [sys.executable, "-m", "snakemake", *(["--profile", "slurm", *FAST] if profile else []),
               "--nolock", *args]
        self.log = log
        self.began = time.monotonic()
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.began)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"snakemake did not finish within {timeout:.0f} s:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        """SIGINT: Snakemake scancels its Slurm jobs and exits (SIGTERM would wait for them)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def run_uuid(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"SLURM run ID: (\S+)", self.output())
            if m:
                return m.group(1)
            assert self.proc.poll() is None, self.output()[-3000:]
            time.sleep(0.2)
        raise AssertionError("no SLURM run ID in Snakemake's output")

    def sbatch_calls(self) -> list[str]:
        """The sbatch command lines the plugin logged (needs --verbose)."""
        return re.findall(r"^sbatch call: (sbatch .*)$", self.output(), re.M)


def sacct_jobs(run_uuid: str) -> list[dict]:
    """The allocations (no steps) of one Snakemake run: JobName is the run's UUID."""
    fields = ["JobID", "Comment", "State", "ExitCode", "AllocTRES", "Partition"]
    proc = subprocess.run(["sacct", "-n", "-P", "-X", "-S", "now-1days", "--name", run_uuid,
                           "-o", ",".join(f"{f}%300" for f in fields)],
                          capture_output=True, text=True, check=True)
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines() if line.strip()]


def squeue_jobs(run_uuid: str) -> list[dict]:
    """Pending and running jobs of one Snakemake run (sacct may lack their comment until they end)."""
    proc = subprocess.run(["squeue", "-h", "-n", run_uuid, "-o", "%i|%k|%T"], capture_output=True, text=True, check=True)
    return [dict(zip(("JobID", "Comment", "State"), line.split("|"))) for line in proc.stdout.splitlines() if line.strip()]


def by_rule(jobs: list[dict], rule: str) -> dict[str, list[dict]]:
    """{wildcards: [jobs]} for one rule, from the plugin's comment rule_<rule>_wildcards_<wildcards>."""
    out: dict[str, list[dict]] = {}
    for job in jobs:
        m = re.fullmatch(rf"rule_{rule}_wildcards_(.+)", job["Comment"])
        if m:
            out.setdefault(m.group(1), []).append(job)
    return out


POST_TRAINING_RULES = ("evaluate", "generative", "zero_shot")


def post_training_groups(jobs: list[dict]) -> dict[str, list[tuple[dict, tuple[str, ...]]]]:
    """{cell: [(job, its rules)]} for the profile's post-training groups. A group job's comment is
    rule_<group id>_<its rules, sorted>; the group id is post_training_<cell> (slurm/config.yaml)."""
    rules = "|".join(POST_TRAINING_RULES)
    out: dict[str, list[tuple[dict, tuple[str, ...]]]] = {}
    for job in jobs:
        m = re.fullmatch(rf"rule_post_training_(.+?)_((?:{rules})(?:_(?:{rules}))*)", job["Comment"])
        if m:
            members = tuple(re.findall(rules, m.group(2)))
            out.setdefault(m.group(1), []).append((job, members))
    return out


def post_training_outputs(run_dir: Path) -> list[Path]:
    """What the post-training group of a demo cell writes (layout.cell_outputs)."""
    return [run_dir / "metrics.json", run_dir / "generative.json", *sorted((run_dir / "zero_shot").glob("*.json"))]


def demo_config(tmp: Path, results: Path, **changes) -> Path:
    """config/demo.yaml with results_dir and nested changes ({"train": {"steps": 300}})."""
    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["results_dir"] = str(results)
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path = tmp / f"{results.name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_log(path: Path) -> dict[int, dict]:
    """train_log.jsonl rows by step (a resumed run may write a step twice: the last one wins)."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return rows


# ------------------------------------------------------------------------------------ 1. demo
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The offline demo sweep through `--profile slurm`: (results dir, Snakemake run, seconds)."""
    tmp = tmp_path_factory.mktemp("slurm_demo")
    results = tmp / "demo"
    run = Snakemake("--configfile", "config/demo.yaml", "--config", f"results_dir={results}", "--verbose",
                    log=tmp / "snakemake.log")
    rc = run.wait(timeout=15 * 60)
    seconds = time.monotonic() - run.began
    assert rc == 0, run.output()[-6000:]
    return results, run, seconds


def test_demo_sweep_through_the_profile(demo):
    results, run, seconds = demo
    print(f"demo sweep through Slurm: {seconds:.0f} s")
    for name in TABLES:
        assert (results / "tables" / name).stat().st_size > 0
    for fig in FIGURES:
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    assert {p.name for p in (results / "runs").iterdir()} == DEMO_CELLS
    assert not list(results.glob("runs/*/checkpoint"))

    jobs = sacct_jobs(run.run_uuid())
    train = by_rule(jobs, "train")
    # every training cell ran as its own Slurm job, in the default (CPU) partition, without a GPU
    assert set(train) == DEMO_CELLS, sorted(train)
    for cell, cell_jobs in train.items():
        assert [j["State"] for j in cell_jobs] == ["COMPLETED"], (cell, cell_jobs)
        assert "gres/gpu" not in cell_jobs[0]["AllocTRES"]
    assert len({j["JobID"] for js in train.values() for j in js}) == len(DEMO_CELLS)
    # everything after a cell's training ran as one Slurm job for that cell: evaluation, samples and
    # every zero-shot set, not one job each
    zero_shot_sets = sorted(p.stem for p in (results / "runs" / "baseline_s0" / "zero_shot").glob("*.json"))
    groups = post_training_groups(jobs)
    assert set(groups) == DEMO_CELLS, sorted(groups)
    for cell, cell_groups in groups.items():
        [(job, members)] = cell_groups
        assert job["State"] == "COMPLETED", (cell, job)
        assert members == ("evaluate", "generative", *(["zero_shot"] if zero_shot_sets else [])), (cell, members)
    for rule in POST_TRAINING_RULES:
        assert not by_rule(jobs, rule), rule
    submissions = len(jobs)
    separate = submissions - len(DEMO_CELLS) + len(DEMO_CELLS) * (2 + len(zero_shot_sets))
    print(f"sbatch submissions of the demo sweep: {submissions} (one job per post-training step: {separate}); "
          f"zero-shot sets: {zero_shot_sets}")
    assert set(by_rule(jobs, "teacher_features")) == {f"{t}_{s}" for t in ("minilm", "tiny-qwen3")
                                                      for s in ("train", "val")}
    assert set(by_rule(jobs, "teacher_span_features")) == {"minilm_train"}  # the token-wise cell's spans
    # the cheap report rules ran on the submit host (localrules), not as Slurm jobs
    assert not by_rule(jobs, "aggregate") and not by_rule(jobs, "plot")
    assert not [j for j in jobs if j["Comment"] in ("rule_aggregate", "rule_plot", "rule_figures", "rule_all")]

    # the resources of config/demo.yaml became these sbatch flags; the profile's signal reached sbatch
    calls = run.sbatch_calls()
    train_call = next(c for c in calls if "--comment rule_train_wildcards_baseline_s0" in c)
    assert " -t 20 " in train_call and " --mem 3000 " in train_call and "--cpus-per-task=1 " in train_call
    assert "--signal=TERM@600" in train_call and "--requeue" in train_call and "--gpus" not in train_call
    features_call = next(c for c in calls if "rule_teacher_features_wildcards_minilm_train" in c)
    assert "--cpus-per-task=2 " in features_call and "--signal" not in features_call
    # a group's members run one after another in its allocation: the largest member's memory and CPUs,
    # the members' time limits added up (config/demo.yaml: 20 minutes each)
    group_call = next(c for c in calls if "--comment rule_post_training_baseline_s0_" in c)
    members = 2 + len(zero_shot_sets)
    assert f" -t {20 * members} " in group_call and " --mem 3000 " in group_call, group_call
    assert "--cpus-per-task=1 " in group_call and "--signal" not in group_call and "--requeue" in group_call
    # nothing is left to do
    again = Snakemake("--configfile", "config/demo.yaml", "--config", f"results_dir={results}", "-n",
                      log=results.parent / "again.log")
    assert again.wait(timeout=120) == 0 and "Nothing to be done" in again.output()


# ------------------------------------------------------------------------------------ 2. GPUs
def _watch_env(results: Path, seen: dict, stop: threading.Event) -> None:
    """CUDA_VISIBLE_DEVICES of each `repa-mdlm` process working on `results` (same machine)."""
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if not any(arg.endswith(b"repa-mdlm") for arg in cmdline[:2]) or str(results).encode() not in b" ".join(cmdline):
                    continue
                env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
            except OSError:
                continue
            seen[cmdline[2].decode()] = env.get(b"CUDA_VISIBLE_DEVICES", b"").decode()
        time.sleep(0.3)


def test_gpu_requests_reach_sbatch_and_the_gpu_node(demo, tmp_path):
    """gpus: 1 -> --gpus=1; with gpu_model -> --gpus=<model>:1. Real jobs on the fake-GPU node."""
    results = tmp_path / "gpu"
    shutil.copytree(demo[0], results, symlinks=True)
    gpu = {"gpus": 1, "cpus_per_gpu": 1, "mem_mb": 3000, "runtime_min": 20}
    config = demo_config(tmp_path, results, resources={
        "teacher_features": gpu,
        "train": {**gpu, "gpu_model": "fake"},       # the GPU type of scripts/local-slurm.sh
        "evaluate": {**gpu, "gpu_model": "fake"},
    })
    cell = "tiny-qwen3_L2_w0.50_s0"
    os.environ["REPA_MDLM_FAKE_GPUS"] = "1"  # the node's GPUs are fake devices: the jobs run on its CPU
    # everything downstream of one teacher's val features, for one cell: 3 jobs
    features = results / "teachers" / "tiny-qwen3" / "features" / "val.npy"
    seen: dict[str, str] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_env, args=(results, seen, stop), daemon=True)
    watcher.start()
    run = Snakemake(str(results / "runs" / cell / "metrics.json"), "--verbose", "--configfile", str(config),
                    "--forcerun", str(features), log=tmp_path / "snakemake.log")
    try:
        rc = run.wait(timeout=6 * 60)
    finally:
        stop.set()
        watcher.join()
    assert rc == 0, run.output()[-6000:]

    calls = {re.search(r"--comment (\S+)", c).group(1): c for c in run.sbatch_calls()}
    evaluate = f"rule_post_training_{cell}_evaluate"  # the cell's post-training group, with one member here
    assert set(calls) == {"rule_teacher_features_wildcards_tiny-qwen3_val", f"rule_train_wildcards_{cell}",
                          evaluate}, sorted(calls)
    assert "--gpus=1 " in calls["rule_teacher_features_wildcards_tiny-qwen3_val"]
    for comment in (f"rule_train_wildcards_{cell}", evaluate):
        assert "--gpus=fake:1 " in calls[comment], calls[comment]
    for call in calls.values():
        assert "--cpus-per-gpu=1 " in call and "--cpus-per-task" not in call and " --mem 3000 " in call

    jobs = sacct_jobs(run.run_uuid())
    assert len(jobs) == 3 and all(j["State"] == "COMPLETED" for j in jobs), jobs
    for job in jobs:
        assert "gres/gpu=1" in job["AllocTRES"], job
    # the training and evaluation processes saw the GPU Slurm gave them
    assert {"teacher-features", "train", "evaluate"} <= set(seen), seen
    assert all(re.fullmatch(r"\d+", v) for v in seen.values()), seen


# ------------------------------------------------------------------------------------ 3. a failed group member
def test_a_failed_post_training_member_loses_nothing_and_the_next_run_does_only_the_rest(demo, tmp_path):
    """One member of a cell's post-training group fails (the judge is unreadable, so its samples cannot
    be scored). Snakemake deletes the outputs of every member of a failed group (plugin issue 110);
    the profile keeps what the others finished, and the next run submits one job with what is missing.
    Generation runs last in its group (rule priorities), so the perplexities before it are kept."""
    results = tmp_path / "failing"
    shutil.copytree(demo[0], results, symlinks=True)
    cell = "baseline_s0"
    run_dir = results / "runs" / cell
    outputs = post_training_outputs(run_dir)
    rule_of = {p: "evaluate" if p.name == "metrics.json" else "generative" if p.name == "generative.json"
               else "zero_shot" for p in outputs}
    for path in outputs:
        path.unlink()
    judge = results / "judge" / "judge.json"
    good = judge.read_bytes()
    judge.write_text("{ not a judge")
    sweep = ("--configfile", "config/demo.yaml", "--config", f"results_dir={results}")
    failed = Snakemake(*map(str, outputs), *sweep, log=tmp_path / "failed.log")
    assert failed.wait(timeout=6 * 60) != 0, failed.output()[-4000:]
    [(job, members)] = post_training_groups(sacct_jobs(failed.run_uuid()))[cell]
    assert job["State"] == "FAILED" and set(members) == set(rule_of.values()), (job, members)
    assert not (run_dir / "generative.json").exists()
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outputs if p.exists()}
    # the members run in priority order (evaluate, zero_shot, generative): all before generative stay
    assert set(kept) == {p for p in outputs if rule_of[p] != "generative"}, (kept, failed.output()[-3000:])
    for path, (data, _) in kept.items():  # whole results, not fragments
        assert json.loads(data), path

    judge.write_bytes(good)
    again = Snakemake(*map(str, outputs), *sweep, log=tmp_path / "again.log")
    assert again.wait(timeout=6 * 60) == 0, again.output()[-4000:]
    [(job, members)] = post_training_groups(sacct_jobs(again.run_uuid()))[cell]
    assert members == tuple(sorted({rule_of[p] for p in outputs if p not in kept})), members
    for path, (data, mtime) in kept.items():  # not run again
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime, path
    assert all(p.exists() for p in outputs)


# ------------------------------------------------------------------------------------ 4. preemption
def test_signalled_training_job_resumes_and_matches_an_uninterrupted_run(demo, tmp_path):
    """SIGTERM to a running training job (what Slurm sends at preemption, at the time limit and,
    with the profile's --signal=TERM@600, ten minutes before it): checkpoint, exit 75, Snakemake
    resubmits, the cell resumes and ends identical to an uninterrupted run."""
    cell, steps, signal_after = "baseline_s0", 300, 100
    runs = {}
    for name in ("interrupted", "uninterrupted"):
        results = tmp_path / name
        (results).mkdir()
        shutil.copytree(demo[0] / "data", results / "data")  # same data, no tokenizer jobs
        runs[name] = (results, demo_config(tmp_path, results, train={"steps": steps}))
    target = lambda name: str(runs[name][0] / "runs" / cell / "metrics.json")  # noqa: E731

    # the reference: the same cell, uninterrupted, on the submit host, alongside the Slurm run
    reference = Snakemake(target("uninterrupted"), "--cores", "1", "--configfile", str(runs["uninterrupted"][1]),
                          log=tmp_path / "uninterrupted.log", profile=False)
    run = Snakemake(target("interrupted"), "--configfile", str(runs["interrupted"][1]), log=tmp_path / "interrupted.log")
    try:
        uuid = run.run_uuid()
        run_dir = runs["interrupted"][0] / "runs" / cell
        partial = run_dir / "train_log.partial.jsonl"
        deadline = time.monotonic() + 300
        jobid = None
        while time.monotonic() < deadline:  # the training job is running and past step `signal_after`
            assert run.proc.poll() is None, run.output()[-4000:]
            if partial.exists() and max(read_log(partial), default=0) >= signal_after:
                running = by_rule([j for j in squeue_jobs(uuid) if j["State"] == "RUNNING"], "train")
                if cell in running:
                    jobid = running[cell][0]["JobID"]
                    break
            time.sleep(0.2)
        assert jobid, "the training job never got going"
        subprocess.run(["scancel", "--signal=TERM", jobid], check=True)

        # the job checkpoints and ends; Snakemake sees the failure and submits attempt 2. The cell's
        # log is read now: Snakemake deletes a job's log file when it starts the job again.
        train_log = runs["interrupted"][0] / "logs" / "train" / f"{cell}.log"
        stopped = resubmitted = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if not stopped and train_log.exists():
                stopped = re.search(r"stopped at step (\d+); checkpoint saved", train_log.read_text(errors="replace"))
            resubmitted = [j for j in by_rule(squeue_jobs(uuid) + sacct_jobs(uuid), "train").get(cell, [])
                           if j["JobID"] != jobid]
            if resubmitted:
                break
            time.sleep(0.5)
        assert resubmitted, f"no second training job:\n{run.output()[-4000:]}"
        assert stopped, "the training process did not report its checkpoint"
        state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        assert signal_after <= state["step"] == int(stopped.group(1)) < steps, state
        assert run.wait(timeout=8 * 60) == 0, run.output()[-6000:]
        assert reference.wait(timeout=8 * 60) == 0, reference.output()[-6000:]
    finally:
        run.stop()
        reference.stop()

    train_jobs = by_rule(sacct_jobs(uuid), "train")[cell]
    assert [j["State"] for j in train_jobs] == ["FAILED", "COMPLETED"], train_jobs
    assert train_jobs[0]["JobID"] == jobid
    # the training process exited 75 (EX_TEMPFAIL) after its checkpoint: the failed job's log says so
    failed_log = REPO / ".snakemake" / "slurm_logs" / "rule_train" / cell / f"{jobid}.log"
    assert "returned non-zero exit status 75" in failed_log.read_text(errors="replace"), failed_log
    log = train_log.read_text(errors="replace")  # attempt 2's
    assert re.search(rf"resumed {cell} from \S+ at step {state['step']}\b", log), log[-3000:]
    assert not (run_dir / "checkpoint").exists()

    # bit-identical to the uninterrupted run
    a, b = (json.loads((runs[n][0] / "runs" / cell / "metrics.json").read_text()) for n in runs)
    assert a["test_nelbo"] == b["test_nelbo"]
    la, lb = (read_log(runs[n][0] / "runs" / cell / "train_log.jsonl") for n in runs)
    assert sorted(la) == sorted(lb) and max(la) == steps
    assert [la[s].get("loss") for s in sorted(la)] == [lb[s].get("loss") for s in sorted(lb)]
    assert [la[s].get("val_nelbo") for s in sorted(la)] == [lb[s].get("val_nelbo") for s in sorted(lb)]


# ------------------------------------------------------------------------------------ 5. halving
def test_halving_on_the_demo_grid_picks_what_its_simulation_picks_and_ends_bit_identical(demo, tmp_path):
    """The demo grid with halving (eta 3, rungs at steps 20 and 60 of 120) through the profile, beside
    the full demo (the module's fixture): its data, teachers and judge copied, every cell trained again."""
    from repa_mdlm.analysis.halving import configuration_of, simulate
    from repa_mdlm.analysis.runs import read_val_curve
    from repa_mdlm.config import Cell

    full, results = demo[0], tmp_path / "halving"
    results.mkdir()
    for folder in ("data", "teachers", "judge"):
        shutil.copytree(full / folder, results / folder, symlinks=True)
    run = Snakemake("--configfile", "config/demo.yaml", "config/halving-on.yaml", "--config",
                    f"results_dir={results}", log=tmp_path / "snakemake.log")
    assert run.wait(timeout=12 * 60) == 0, run.output()[-6000:]

    # the decisions, rung by rung, are those of halving simulated on the full grid's validation logs
    curves = {c: dict(zip(*read_val_curve(full / "runs" / c / "train_log.jsonl").to_dict("list").values()))
              for c in DEMO_CELLS}
    simulated = simulate(curves, 3, [20, 60, 120])
    for rung in (1, 2):
        real = pd.read_csv(results / "tables" / "halving" / f"rung{rung}.csv")
        expected = {d.configuration: (d.metric, d.kept) for d in simulated if d.rung == rung}
        got = {r.configuration: (r.metric, r.decision == "kept") for r in real.itertuples()}
        assert got == expected, (rung, got, expected)
    kept = {d.configuration for d in simulated if d.rung == 2 and d.kept}
    survivors = {c for c in DEMO_CELLS if Cell.parse(c).is_baseline or configuration_of(Cell.parse(c)) in kept}
    assert 1 <= len(survivors) - 1 < 3

    # only the survivors (and the baseline) read the test set; they end bit-identical to the full grid
    assert {p.parent.name for p in results.glob("runs/*/metrics.json")} == survivors
    for cell in survivors:
        model = Path("runs", cell, "model", "model.safetensors")
        assert (results / model).read_bytes() == (full / model).read_bytes(), cell
    for cell in DEMO_CELLS - survivors:  # stopped: the checkpoint kept, for a later re-judge to resume
        assert (results / "runs" / cell / "checkpoint" / "state.json").exists(), cell

    # one Slurm job per cell and rung; the judge ran on the submit host, between the rungs
    jobs = sacct_jobs(run.run_uuid())
    rung_jobs = by_rule(jobs, "train_rung")
    assert len([k for k in rung_jobs if k.endswith("_20")]) == 9
    assert len([k for k in rung_jobs if k.endswith("_60")]) == len({d.configuration for d in simulated
                                                                     if d.rung == 1 and d.kept})
    assert set(by_rule(jobs, "train")) == survivors and not by_rule(jobs, "halving_rung")
    table1 = (results / "tables" / "table1.md").read_text()
    assert "Successive halving" in table1 and "stopped:" in table1
    assert (results / "figures" / "fig11_halving.png").stat().st_size > 1000
    assert "rung" in (results / "tables" / "halving.md").read_text()
    again = Snakemake("--configfile", "config/demo.yaml", "config/halving-on.yaml", "--config",
                      f"results_dir={results}", "-n", log=tmp_path / "again.log")
    assert again.wait(timeout=120) == 0 and "Nothing to be done" in again.output()
