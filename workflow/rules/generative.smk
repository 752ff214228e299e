# What each cell generates, read by a judge: generative perplexity, unigram entropy, the
# sampler's cost (generative.*). Without a configured judge, a small causal judge is trained on
# the train split first; the tables then say that it measures fit to that data.

from repa_mdlm.workflow.snakemake_plan import figure_outputs

GENERATIVE_ON = CFG.generative.samples > 0
TRAINED_JUDGE = f"{R}/{layout.JUDGE}"


rule train_judge:
    input:
        manifest=MANIFEST,
        tokenizer=TOKENIZER,
    output:
        model=directory(f"{TRAINED_JUDGE}/{layout.JUDGE_MODEL}"),
        info=f"{TRAINED_JUDGE}/{layout.JUDGE_INFO}",
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        out=lambda wildcards, output: os.path.dirname(output.info),
        spec=as_json(judge_spec(CFG)),
    threads: job_threads(CFG, "evaluate")
    resources:
        **job_resources(CFG, "evaluate"),
    log:
        log_file("train_judge"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm train-judge --spec {params.spec:q} --data {params.data:q} --out {params.out:q} "
        "--threads {threads} > {log:q} 2>&1"


rule generative:
    input:
        model=run_file(layout.MODEL),
        summary=run_file(layout.TRAIN_SUMMARY),
        manifest=MANIFEST,
        judge=[] if CFG.generative.judge.name_or_path else [f"{TRAINED_JUDGE}/{layout.JUDGE_INFO}"],
    output:
        run_file(layout.GENERATIVE),
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        run_dir=lambda wildcards, input: os.path.dirname(input.summary),
        judge=lambda wildcards, input: os.path.dirname(input.judge[0]) if input.judge else "",
        spec=as_json(generative_spec(CFG)),
    threads: job_threads(CFG, "evaluate")
    resources:
        **job_resources(CFG, "evaluate"),
        **tracking_setting(CFG),  # unused here; a Slurm group's members must agree on string resources
    # Never retried within a run: under Slurm a cell's post-training steps are one group job, and a
    # retry would run the whole group again (slurm/config.yaml). The next run does what is missing.
    retries: 0
    log:
        log_file("generative", "{cell}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm generative --spec {params.spec:q} --cell {wildcards.cell} --data {params.data:q} "
        "--run-dir {params.run_dir:q} --judge={params.judge:q} --out {output:q} --threads {threads} "
        "> {log:q} 2>&1"


GENERATIVE_TABLES = [f"{R}/{layout.TABLES}/{name}" for name in layout.GENERATIVE_TABLE_FILES]
GENERATIVE_OUTPUTS = (GENERATIVE_TABLES + [f"{R}/{layout.FIGURES}/{fig.stem}.{ext}" for fig in layout.GENERATIVE_FIGURES
                                         for ext in layout.FIGURE_FORMATS]) if GENERATIVE_ON else []
"""What `snakemake figures` (and the default target) asks of this file; none with generative.samples: 0."""
GENERATIVE_FIGURES = figure_outputs(R, layout.GENERATIVE_FIGURES, report)


rule generative_report:
    input:
        generative=each_finished_cell(run_file(layout.GENERATIVE)),
        runs=f"{R}/{layout.TABLES}/{layout.RUNS_TABLE_FILES[0]}",
    output:
        GENERATIVE_TABLES[:-1]
        + [
            report(GENERATIVE_TABLES[-1], caption="../report/generative.rst", category="Generative quality"),
        ]
        + GENERATIVE_FIGURES,
    params:
        tables=lambda wildcards, output: os.path.dirname(output[0]),
        figures=lambda wildcards, output: os.path.dirname(output[-1]),
    log:
        log_file("generative_report"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm generative-report --generative {input.generative:q} --runs {input.runs:q} "
        "--tables-dir {params.tables:q} --figures-dir {params.figures:q} > {log:q} 2>&1"
