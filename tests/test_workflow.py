"""The Snakemake DAG: the paper grid planned offline, config errors before any job, lint,
the offline demo sweep end to end (raw text -> Table 1 and Figures 2-5), and the CPU study
scaled down (its paired comparison and verdict come from the runs)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import REPO

pytestmark = pytest.mark.workflow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, offline=False, check=True):
    cmd = list(args)
    if offline and shutil.which("unshare") and os.geteuid() == 0:
        cmd = ["unshare", "--net", *SNAKEMAKE, *cmd]  # no network at all, not just HF_HUB_OFFLINE
    else:
        cmd = [*SNAKEMAKE, *cmd]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_paper_grid_dry_run_offline():
    proc = snakemake("-n", "--printshellcmds", "--quiet", "rules", offline=True)
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    assert counts["train"] == 121 and counts["evaluate"] == 121
    assert counts["teacher_features"] == 6 * 2  # six teachers x {train, val}
    assert counts["tokenizer"] == counts["tokenize"] == counts["aggregate"] == counts["plot"] == 1
    proc = snakemake("-n", "--printshellcmds", offline=True)
    out = proc.stdout
    tokenize = next(line for line in out.splitlines() if "repa-mdlm tokenize " in line)
    assert "HuggingFaceFW/fineweb-2" in tokenize and "por_Latn" in tokenize and "Qwen/Qwen2.5-0.5B" in tokenize
    assert "results/runs/qwen3-1.7b_L17_w1.00_s0/metrics.json" in out


def test_paper_grid_with_halving_plans_its_first_rung_and_the_baseline():
    """halving.enabled on the paper's config: every REPA cell to its first rung (step 500), the baseline to
    the end; what comes after the judge is planned once it has judged."""
    counts = job_counts(snakemake("-n", "--quiet", "rules", "--configfile", "config.yaml", "config/halving-on.yaml",
                                  offline=True).stdout)
    assert counts["train_rung"] == 120 and counts["train"] == counts["evaluate"] == 1, counts
    assert counts["halving_rung"] == 2
    proc = snakemake("-n", "--printshellcmds", "--configfile", "config.yaml", "config/halving-on.yaml", offline=True)
    assert "--rung-step 500 --rung-record results/runs/qwen3-0.6b_L3_w0.25_s0/halving/step500.json" in proc.stdout


def test_study_with_halving_plans_every_seed_of_every_configuration_to_its_first_rung(tmp_path):
    counts = job_counts(snakemake("-n", "--quiet", "rules", "--profile", "profiles/study", "--configfile",
                                  "config/study.yaml", "config/halving-on.yaml", "--config",
                                  f"results_dir={tmp_path}").stdout)
    assert counts["train_rung"] == 4 * 6 and counts["train"] == 6, counts  # 4 teachers x 6 seeds; the baselines


def test_online_mode_plans_no_feature_jobs():
    counts = job_counts(snakemake("-n", "--quiet", "rules", "--config", "teacher_features=online").stdout)
    assert "teacher_features" not in counts and counts["train"] == 121


def test_paper_grid_tokenwise_online_plans_121_trainings_and_names_its_cells(tmp_path):
    overlay = tmp_path / "tokenwise.yaml"
    overlay.write_text("teacher_features: online\nrepa: {alignment: tokenwise}\n")
    proc = snakemake("-n", "--printshellcmds", "--configfile", "config.yaml", str(overlay), offline=True)
    counts = job_counts(proc.stdout)
    assert counts["train"] == 121 and "teacher_features" not in counts and "teacher_span_features" not in counts
    assert "results/runs/qwen3-1.7b+tok_L17_w1.00_s0/metrics.json" in proc.stdout
    assert '\\"alignment\\":\\"tokenwise\\"' in proc.stdout or '"alignment":"tokenwise"' in proc.stdout


def test_study_tokenwise_extension_plans_its_twelve_cells_and_two_span_caches(tmp_path):
    counts = job_counts(snakemake("-n", "--quiet", "rules", "--profile", "profiles/study", "--configfile",
                                  "config/study.yaml", "config/study-tokenwise.yaml", "--config",
                                  f"results_dir={tmp_path}", offline=True).stdout)
    assert counts["train"] == 6 * (1 + 4 + 2) and counts["teacher_span_features"] == 2, counts
    assert counts["teacher_features"] == 4 * 2


def test_lint_is_clean():
    for args in ([], ["--profile", "profiles/demo"], ["--profile", "profiles/study"]):
        proc = snakemake("--lint", *args)
        out = proc.stdout + proc.stderr
        assert "Congratulations, your workflow is in a good condition!" in out, out[-2000:]


@pytest.mark.parametrize("override,message", [
    ("seq_len=999999", r"seq_len = 999999 exceeds student\.max_position_embeddings"),
    ("teacher_features=maybe", r"teacher_features"),
])
def test_bad_config_fails_before_any_job(override, message):
    proc = snakemake("-n", "--config", override, check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr)


def test_bad_config_file_names_the_key(tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["repa"]["layers"] = [3, 30]
    raw["repa"]["weights"] = [-1.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = snakemake("-n", "--configfile", str(bad), check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "repa.layers[1] = 30: the student has 24 layers" in err
    assert "repa.weights[0] = -1.0: REPA weights must be > 0" in err


@pytest.mark.slow
def _check_demo_beyond_table_1(results, cells):
    """Issues 17 and 18 on the demo: every cell's generative metrics, zero-shot PPL (where Debian's
    fortunes-br is installed, as CI does), TensorBoard events read back, provenance."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from repa_mdlm.io import read_json_object

    for cell in cells:
        run = results / "runs" / cell
        gen = read_json_object(run / "generative.json", "generative evaluation")
        assert gen["samples"] == 32 and gen["gen_ppl"] > 1 and 0 < gen["entropy"] and gen["judge_trained_on_train_split"]
        if Path("/usr/share/games/fortunes/brasil").exists():
            assert read_json_object(run / "zero_shot" / "fortunes-br.json", "zero-shot")["test_ppl"] > 1
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        assert "train/loss" in events.Tags()["scalars"], events.Tags()
        assert read_json_object(run / "train_summary.json", "summary")["provenance"]["versions"]["torch"]
    assert "measures fit to that data" in (results / "tables" / "generative.md").read_text()
    for fig in ("fig9_gen_ppl_entropy", "fig10_elbo_vs_gen_ppl"):
        assert (results / "figures" / f"{fig}.png").stat().st_size > 1000
    assert (results / "tables" / "provenance.json").exists()
    assert "## Beyond Table 1's perplexity" in (results / "tables" / "verdict.md").read_text()


def test_demo_sweep_end_to_end(tmp_path):
    results = tmp_path / "demo"
    snakemake("--profile", "profiles/demo", "--config", f"results_dir={results}", "--nolock")
    cells = sorted(p.name for p in (results / "runs").iterdir())
    assert len(cells) == 10 and "baseline_s0" in cells and "minilm+tok-mlp128_L3_w0.50_s0" in cells
    runs = pd.read_parquet(results / "tables" / "runs.parquet")
    assert len(runs) == 10 and runs["test_ppl"].between(1, 2048).all()
    assert (runs["test_nelbo_se"] > 0).all()
    table1 = pd.read_csv(results / "tables" / "table1.csv")
    assert sorted(table1["teacher"]) == ["minilm", "minilm+tok-mlp128", "tiny-qwen3"]
    spans = json.loads((results / "teachers" / "minilm" / "features-tokenwise" / "train.json").read_text())
    assert spans["alignment"] == "tokenwise" and 0 < spans["left_out_share"] < 0.5, spans
    assert (results / "figures" / "fig6_heatmap_minilm+tok-mlp128.png").stat().st_size > 1000
    for name in ("table1.md", "table1.tex", "runs.csv"):
        assert (results / "tables" / name).stat().st_size > 0
    for fig in ("fig2_training_curves", "fig3_teacher", "fig4_layer", "fig5_weight"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    # the foreign-tokenizer teacher read text; the resolved config sits beside each run
    summary = json.loads((results / "runs" / "minilm_L2_w0.50_s0" / "train_summary.json").read_text())
    assert summary["steps"] > 0
    assert json.loads((results / "teachers" / "minilm" / "features" / "train.json").read_text())["input"] == "text"
    assert json.loads((results / "teachers" / "tiny-qwen3" / "features" / "train.json").read_text())["input"] == "student_ids"
    assert (results / "runs" / "minilm_L2_w0.50_s0" / "config.yaml").exists()
    assert not list(results.glob("runs/*/checkpoint"))
    _check_demo_beyond_table_1(results, cells)
    # nothing left to do; asking for one cell re-runs that cell alone
    assert "Nothing to be done" in snakemake("--profile", "profiles/demo", "--config", f"results_dir={results}",
                                             "-n", "--nolock").stdout
    # speed-only settings re-run nothing; a setting that changes the math re-runs every cell
    for name, train, planned in (("speed", "{prefetch_batches: 0, activation_checkpointing: true, compile: true}",
                                  False), ("lr", "{lr: 1.0e-3}", True)):
        override = tmp_path / f"{name}.yaml"
        override.write_text(f"train: {train}\n")
        out = snakemake("--profile", "profiles/demo", "--configfile", "config/demo.yaml", str(override),
                        "--config", f"results_dir={results}", "-n", "--nolock").stdout
        assert ("Nothing to be done" not in out) == planned, name
        if planned:
            assert job_counts(out)["train"] == 10
    target = f"{results}/runs/minilm_L3_w1.00_s0/metrics.json"
    demo = ("--profile", "profiles/demo", "--config", f"results_dir={results}", "-n", "--nolock")
    counts = job_counts(snakemake(target, *demo, "--forcerun", "train", "--quiet", "rules").stdout)
    assert counts == {"train": 1, "evaluate": 1}
    # figures come from the results alone: regenerating them trains nothing
    counts = job_counts(snakemake("figures", *demo, "--forcerun", "aggregate", "--quiet", "rules").stdout)
    assert "train" not in counts and "evaluate" not in counts and counts["aggregate"] == 1 and counts["plot"] == 1
    # successive halving turned on over the finished grid re-trains no cell: every rung's record comes
    # from the cell's own log, and the judge keeps what the simulation on those logs keeps
    halving = ("--profile", "profiles/demo", "--configfile", "config/demo.yaml", "config/halving-on.yaml",
               "--config", f"results_dir={results}", "--nolock")
    counts = job_counts(snakemake(*halving, "-n", "--quiet", "rules").stdout)
    assert counts["train_rung"] == 9 and "train" not in counts and "evaluate" not in counts, counts
    models = {p: p.read_bytes() for p in results.glob("runs/*/model/model.safetensors")}
    snakemake(*halving)
    assert {p: p.read_bytes() for p in results.glob("runs/*/model/model.safetensors")} == models
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/halving/step*.json")]
    assert len(records) == 9 + 3 and {r["from"] for r in records} == {"the finished run's log"}
    assert "Successive halving: 1 of 9 REPA configurations reached the end" in (results / "tables" / "table1.md").read_text()


def test_study_config_plans_six_paired_seeds_with_twins(tmp_path):
    counts = job_counts(snakemake("--profile", "profiles/study", "--config", f"results_dir={tmp_path}", "-n",
                                  "--quiet", "rules", offline=True).stdout)
    assert counts["train"] == counts["evaluate"] == 6 * (1 + 4)  # 6 seeds x (baseline + 2 teachers + 2 twins)
    assert counts["compare"] == 1 and counts["teacher_features"] == 4 * 2
    assert counts["build_teacher_e5_pt"] == counts["build_teacher_e5_pt_twin"] == 1
    assert counts["build_teacher_minilm_twin"] == 1


@pytest.mark.slow
def test_study_scaled_down_verdict_comes_from_the_runs(tmp_path):
    """The study's own config, on a slice of the corpus and 30 steps: the paired comparison and
    the verdict are computed from the runs, so changing one cell's metrics changes the verdict."""
    from repa_mdlm.data.dataset import unigram_perplexity
    from repa_mdlm.io import atomic_write_checked_json, read_json_object

    results = tmp_path / "study"
    small = tmp_path / "small.yaml"
    small.write_text(f"""results_dir: {results}
seeds: [0, 1, 2]
corpus: {{train_tokens: 32768, val_tokens: 8192, test_tokens: 8192, tokenizer_training_documents: 300}}
tokenizer: {{train_vocab_size: 512}}
train: {{steps: 30, log_every: 10, val_every: 10, val_sequences: 32, checkpoint_every: 20}}
evaluate: {{t_draws: 4, sequences: 32}}
""")
    verdict = results / "tables" / "verdict.md"
    study = ("--profile", "profiles/study", "--configfile", "config/study.yaml", str(small), "--nolock")
    snakemake(*study, str(verdict))
    paired = pd.read_csv(results / "tables" / "paired.csv")
    assert sorted(paired["teacher"]) == ["e5-pt", "e5-pt-twin", "minilm", "minilm-twin"]
    assert (paired["n_seeds"] == 3).all()
    runs = pd.read_parquet(results / "tables" / "runs.parquet")
    base = runs[runs["teacher"] == "baseline"].set_index("seed")["test_ppl"]
    cell = runs[runs["teacher"] == "minilm"].set_index("seed")["test_ppl"]
    minilm = paired.set_index("teacher").loc["minilm"]
    assert minilm["diff_mean"] == pytest.approx((cell - base).mean())
    probe = pd.read_csv(results / "tables" / "teacher_features.csv").set_index("teacher")
    assert probe.loc["minilm-twin", "anisotropy"] > probe.loc["minilm", "anisotropy"]  # random nets: one direction
    for teacher in ("e5-pt", "e5-pt-twin", "minilm-twin"):  # a twin reads the text through its teacher's tokenizer
        assert json.loads((results / "teachers" / teacher / "features" / "train.json").read_text())["input"] == "text"
    text = verdict.read_text()
    assert f"**{base.mean():.2f}** (mean of 3 seed(s)" in text
    assert f"**{unigram_perplexity(results / 'data')['unigram_ppl']:.2f}**" in text
    assert "| minilm-twin | random twin of minilm | 384 |" in text
    assert "## Does the teacher's knowledge help? Each teacher against its random twin" in text
    assert "| e5-pt | e5-pt-twin | 3 | 0.50 | 3 |" in text and "| minilm | minilm-twin | 3 | 0.50 | 3 |" in text
    assert len(list((results / "tables").glob("steps_to_baseline.csv"))) == 1

    def beaten(text):
        return int(re.search(r"\*\*(\d+) of 4 REPA configurations beat the baseline\*\*", text).group(1))

    def claimed(tables):  # the verdict counts only what survives Holm's correction over the 4 configurations
        return int((pd.read_csv(tables / "paired.csv")["outcome_adjusted"] == "better than the baseline").sum())

    assert beaten(text) == claimed(results / "tables")
    for seed, ppl in base.items():  # minilm's cells of every seed now 40 PPL better than their baseline
        path = results / "runs" / f"minilm_L3_w0.50_s{seed}" / "metrics.json"
        metrics = read_json_object(path, "metrics")
        metrics["test_ppl"] = ppl - 40.0 + 0.1 * seed
        metrics["test_nelbo"] = math.log(metrics["test_ppl"])  # aggregate refuses a PPL that is not exp(N-ELBO)
        atomic_write_checked_json(path, metrics)  # a hand edit must carry its new checksum, or aggregate stops
    snakemake(*study, str(verdict))
    after = verdict.read_text()
    assert after != text
    after_paired = pd.read_csv(results / "tables" / "paired.csv").set_index("teacher")
    assert after_paired.loc["minilm", "outcome_adjusted"] == "better than the baseline"  # survives the correction
    assert beaten(after) == claimed(results / "tables") >= 1
    assert (results / "tables" / "power.csv").exists()
    assert "minilm L3 λ0.50 (-39.90 PPL)" in after
    assert "better than minilm-twin |" in after  # and now beats its twin too
