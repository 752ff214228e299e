# Runs table, Table 1 (as in the paper, and with the feature-cache cost amortised), the figures
# and text samples: from the results alone, never retraining. `snakemake --report report.html`
# collects everything marked report() below, with the captions in workflow/report/.
#
#   snakemake figures --forcerun plot        redraw the figures (code changes do not retrigger jobs)
#   snakemake figures --forcerun aggregate   recompute the tables, then the figures


report: "../report/workflow.rst"


# Sampler settings of the `sample` and `report_samples` rules.
SAMPLING = {"n_samples": 4, "steps": 256, "seed": 0}

TABLE_STEMS = ("table1", "table1_amortized")
FIGURE_STEMS = [
    "fig2_training_curves",
    "fig3_teacher",
    "fig4_layer",
    "fig5_weight",
    *(f"fig6_heatmap_{t}" for t in TEACHERS),
    "fig7_pareto",
    "fig8_repa_loss",
]
# stem -> (caption, subcategory, labels). The report shows the PNG of each figure (the PDF is
# for papers) and the HTML of each table (it does not render .md; .csv/.tex are for scripts).
FIGURE_REPORT = {
    "fig2_training_curves": ("fig2", "Training curves", {"figure": "Fig. 2", "teacher": "best", "layer": "best", "weight": "best"}),
    "fig3_teacher": ("fig3", "Means by axis", {"figure": "Fig. 3", "teacher": "by teacher", "layer": "all", "weight": "all"}),
    "fig4_layer": ("fig4", "Means by axis", {"figure": "Fig. 4", "teacher": "all", "layer": "by layer", "weight": "all"}),
    "fig5_weight": ("fig5", "Means by axis", {"figure": "Fig. 5", "teacher": "all", "layer": "all", "weight": "by weight"}),
    **{
        f"fig6_heatmap_{t}": ("heatmap", "Heatmaps", {"figure": "heatmap", "teacher": t, "layer": "all", "weight": "all"})
        for t in TEACHERS
    },
    "fig7_pareto": ("pareto", "Cost", {"figure": "Pareto front", "teacher": "all", "layer": "all", "weight": "all"}),
    "fig8_repa_loss": ("repa_loss", "Training curves", {"figure": "REPA loss", "teacher": "all", "layer": "all", "weight": "all"}),
}
TABLE_VARIANT = {"table1": "as in the paper", "table1_amortized": "feature cache amortised"}

TABLES = [f"{R}/tables/runs.parquet", f"{R}/tables/runs.csv"] + [
    f"{R}/tables/{stem}.{ext}" if ext != "html" else report(
        f"{R}/tables/{stem}.html", caption=f"../report/{stem}.rst", category="Table 1",
        labels={"variant": TABLE_VARIANT[stem]})
    for stem in TABLE_STEMS
    for ext in ("csv", "md", "tex", "html")
]
FIGURES = [
    f"{R}/figures/{stem}.{ext}" if ext != "png" else report(
        f"{R}/figures/{stem}.png", caption=f"../report/{FIGURE_REPORT[stem][0]}.rst", category="Figures",
        subcategory=FIGURE_REPORT[stem][1], labels=FIGURE_REPORT[stem][2])
    for stem in FIGURE_STEMS
    for ext in ("png", "pdf")
]
SAMPLES = [f"{R}/samples/report_samples.md"] + [report(
    f"{R}/samples/report_samples.html", caption="../report/samples.rst", category="Samples",
    labels={"cells": "best REPA cell and baseline"})]


rule aggregate:
    input:
        metrics=expand(f"{R}/runs/{{cell}}/metrics.json", cell=CELLS),
        summaries=expand(f"{R}/runs/{{cell}}/train_summary.json", cell=CELLS),
        # the teachers' feature manifests: their wall_s is the cache cost of the amortised Table 1
        features=lambda wildcards: (
            expand(f"{R}/teachers/{{teacher}}/features/{{split}}.json", teacher=TEACHERS, split=["train", "val"])
            if CFG.teacher_features == "cached"
            else []
        ),
    output:
        TABLES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/aggregate.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm aggregate --metrics {input.metrics:q} --features {input.features:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot:
    input:
        runs=f"{R}/tables/runs.parquet",
        logs=expand(f"{R}/runs/{{cell}}/train_log.jsonl", cell=CELLS),
    output:
        FIGURES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        teachers=TEACHERS,
    log:
        f"{R}/logs/plot.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm figures --runs {input.runs:q} --logs {input.logs:q} --teachers {params.teachers:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


# Does REPA help? Paired by seed against the baseline, the teacher-feature probe against the
# random-init controls (teachers with init_from_config), and a short verdict beside Table 1.
COMPARISON = [f"{R}/tables/{name}" for name in
              ("paired.csv", "steps_to_baseline.csv", "teacher_features.csv", "verdict.md")]


rule compare:
    input:
        runs=f"{R}/tables/runs.parquet",
        logs=expand(f"{R}/runs/{{cell}}/train_log.jsonl", cell=CELLS),
        manifest=f"{DATA}/manifest.json",
        features=lambda wildcards: (
            expand(f"{R}/teachers/{{teacher}}/features/train.npy", teacher=TEACHERS)
            if CFG.teacher_features == "cached"
            else []
        ),
    output:
        COMPARISON,
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        teachers=lambda wildcards, input: TEACHERS if input.features else [],
        controls=[t.name for t in CFG.repa.teachers if t.init_from_config],
        title=f"REPA study ({R})",
    log:
        f"{R}/logs/compare.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm compare --runs {input.runs:q} --logs {input.logs:q} --data {params.data:q} "
        "--teachers {params.teachers:q} --features {input.features:q} --controls {params.controls:q} "
        "--title {params.title:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


# Any cell by target: snakemake results/samples/<cell>.md
rule sample:
    input:
        model=f"{R}/runs/{{cell}}/model",
        metrics=f"{R}/runs/{{cell}}/metrics.json",
        tokenizer=f"{DATA}/tokenizer",
        manifest=f"{DATA}/manifest.json",
    output:
        report(f"{R}/samples/{{cell}}.md", caption="../report/sample_cell.rst", category="Samples",
               subcategory="Per cell", labels=lambda wildcards: {
                   "cell": wildcards.cell, "teacher": CELLS[wildcards.cell].teacher,
                   "layer": str(CELLS[wildcards.cell].layer or "-"), "seed": str(CELLS[wildcards.cell].seed),
                   "weight": "-" if CELLS[wildcards.cell].weight is None else f"{CELLS[wildcards.cell].weight:.2f}"}),
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.metrics),
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        **SAMPLING,
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    log:
        f"{R}/logs/sample/{{cell}}.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm sample --run-dir {params.run_dir:q} --data {params.data:q} --out {output:q} "
        "--n-samples {params.n_samples:q} --steps {params.steps:q} --seed {params.seed:q} --threads {threads} "
        "> {log:q} 2>&1"


# The best REPA cell is only known once every cell is evaluated: this job reads the metrics
# itself (no checkpoint rule), then samples that cell and the baseline. It depends on the
# metrics, not on the runs table, so `--forcerun aggregate` or `--forcerun plot` never resamples.
rule report_samples:
    input:
        metrics=expand(f"{R}/runs/{{cell}}/metrics.json", cell=CELLS),
        models=expand(f"{R}/runs/{{cell}}/model", cell=CELLS),
        tokenizer=f"{DATA}/tokenizer",
        manifest=f"{DATA}/manifest.json",
    output:
        md=SAMPLES[0],
        html=SAMPLES[1],
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        **SAMPLING,
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    log:
        f"{R}/logs/report_samples.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm report-samples --metrics {input.metrics:q} --data {params.data:q} --out-md {output.md:q} "
        "--out-html {output.html:q} --n-samples {params.n_samples:q} --steps {params.steps:q} --seed {params.seed:q} "
        "--threads {threads} > {log:q} 2>&1"


rule figures:
    input:
        TABLES,
        COMPARISON,
        FIGURES,
        SAMPLES,
