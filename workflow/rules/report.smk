# Runs table, Table 1 (as in the paper, and with the feature-cache cost amortised), the verdict
# beside it, the figures and text samples: from the results alone, never retraining.
# `snakemake --report report.html` collects everything marked report() below, with the captions in
# workflow/report/.
#
#   snakemake figures --forcerun plot        redraw the figures (code changes do not retrigger jobs)
#   snakemake figures --forcerun aggregate   recompute the tables, then the figures


report: "../report/workflow.rst"


# File names, figure captions and report labels: src/repa_mdlm/layout.py, which the code that
# writes these files uses too; the lists of them: src/repa_mdlm/workflow/snakemake_plan.py.
from repa_mdlm.workflow.snakemake_plan import (
    cell_sample_output,
    comparison_outputs,
    comparison_page_sources,
    comparison_pages,
    control_teachers,
    feature_manifests,
    figure_outputs,
    provenance_outputs,
    sample_outputs,
    sampler_settings,
    table_outputs,
    train_features,
    probe_teachers,
    twin_pairs,
)

TABLES = table_outputs(R, report)
PROVENANCE = provenance_outputs(R, report)
FIGURES = figure_outputs(R, layout.figure_files(LABELS), report)
SAMPLES = sample_outputs(R, report)


rule aggregate:
    input:
        metrics=each_finished_cell(run_file(layout.METRICS)),
        summaries=each_finished_cell(run_file(layout.TRAIN_SUMMARY)),
        # the teachers' feature manifests: their wall_s is the cache cost of the amortised Table 1
        features=lambda wildcards: feature_manifests(CFG),
        halving=HALVING_TABLES[:1],  # a halving sweep: Table 1 counts the stopped configurations
    output:
        TABLES,
        PROVENANCE,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        log_file("aggregate"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm aggregate --metrics {input.metrics:q} --features {input.features:q} --halving {input.halving:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot:
    input:
        runs=TABLES[0],
        logs=each_finished_cell(run_file(layout.TRAIN_LOG)),
    output:
        FIGURES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        teachers=LABELS,
    log:
        log_file("plot"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm figures --runs {input.runs:q} --logs {input.logs:q} --teachers {params.teachers:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


# Does REPA help? Paired by seed against the baseline, the teacher-feature probe against the
# random-init controls (init_from_config) and each teacher's matched twin (control_of), and a
# verdict beside Table 1.
COMPARISON = comparison_outputs(R)


rule compare:
    input:
        runs=TABLES[0],
        logs=each_finished_cell(run_file(layout.TRAIN_LOG)),
        manifest=MANIFEST,
        features=lambda wildcards: train_features(CFG),
        generative=each_finished_cell(run_file(layout.GENERATIVE)) if GENERATIVE_ON else [],
        zero_shot=each_finished_cell(run_file(layout.zero_shot_result("{test_set}")), test_set=ZERO_SHOT_SETS),
    output:
        COMPARISON,
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        teachers=lambda wildcards, input: probe_teachers(CFG) if input.features else [],
        controls=control_teachers(CFG),
        twins=twin_pairs(CFG),
        title=f"REPA study ({R})",
    log:
        log_file("compare"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm compare --runs {input.runs:q} --logs {input.logs:q} --data {params.data:q} "
        "--teachers {params.teachers:q} --features {input.features:q} --controls {params.controls:q} "
        "--twins {params.twins:q} "
        "--title {params.title:q} --generative {input.generative:q} --zero-shot {input.zero_shot:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


# The verdict, the paired comparisons and their power as pages of the HTML report, beside Table 1
# (the report shows HTML inline, not Markdown or CSV). Redrawn from compare's files alone.
COMPARISON_PAGES = comparison_pages(R, report)


rule comparison_pages:
    input:
        comparison_page_sources(R),
    output:
        COMPARISON_PAGES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        titles=list(layout.COMPARISON_PAGES.values()),
    log:
        log_file("comparison_pages"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm report-pages --sources {input:q} --titles {params.titles:q} --out-dir {params.out_dir:q} "
        "> {log:q} 2>&1"


localrules:
    comparison_pages,


# Any cell by target: snakemake results/samples/<cell>.md
rule sample:
    input:
        model=run_file(layout.MODEL),
        metrics=run_file(layout.METRICS),
        tokenizer=TOKENIZER,
        manifest=MANIFEST,
    output:
        cell_sample_output(R, report, CELLS),
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.metrics),
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        **sampler_settings(),  # the defaults of `repa-mdlm sample`
    threads: job_threads(CFG, "evaluate")
    resources:
        **job_resources(CFG, "evaluate"),
    log:
        log_file("sample", "{cell}"),
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
        metrics=each_finished_cell(run_file(layout.METRICS)),
        models=each_finished_cell(run_file(layout.MODEL)),
        tokenizer=TOKENIZER,
        manifest=MANIFEST,
    output:
        md=SAMPLES[0],
        html=SAMPLES[1],
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        **sampler_settings(),  # the defaults of `repa-mdlm sample`
    threads: job_threads(CFG, "evaluate")
    resources:
        **job_resources(CFG, "evaluate"),
    log:
        log_file("report_samples"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm report-samples --metrics {input.metrics:q} --data {params.data:q} --out-md {output.md:q} "
        "--out-html {output.html:q} --n-samples {params.n_samples:q} --steps {params.steps:q} --seed {params.seed:q} "
        "--threads {threads} > {log:q} 2>&1"


# Every cell's training outputs and results, asked for by name: Snakemake re-makes a missing file only if
# asked, so a model removed by a re-train that was killed, or a deleted metrics.json, would otherwise stay
# missing beside tables that are still up to date.
CELL_OUTPUTS = [*layout.TRAINING_OUTPUTS, *layout.cell_results(GENERATIVE_ON, ZERO_SHOT_SETS)]
CELL_FILES = each_finished_cell(run_file("{name}"), name=CELL_OUTPUTS)
# halving: the baseline is never judged, so it trains from the start, beside the first rung
BASELINE_FILES = expand(run_file("{name}"), cell=[n for n, c in CELLS.items() if c.is_baseline], name=CELL_OUTPUTS)


rule figures:
    input:
        CELL_FILES,
        BASELINE_FILES,
        TABLES,
        PROVENANCE,
        COMPARISON,
        COMPARISON_PAGES,
        FIGURES,
        SAMPLES,
        GENERATIVE_OUTPUTS,
        ZERO_SHOT_OUTPUTS,
        HALVING_TABLES,
        HALVING_FIGURES,
