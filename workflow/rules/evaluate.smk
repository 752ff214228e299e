# Test ELBO perplexity (no REPA term), several stratified t draws, standard error.


rule evaluate:
    input:
        model=run_file(layout.MODEL),
        summary=run_file(layout.TRAIN_SUMMARY),
        manifest=MANIFEST,
    output:
        run_file(layout.METRICS),
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        spec=lambda wildcards: as_json(cell_spec(CFG, CELLS[wildcards.cell])),
        run_dir=lambda wildcards, input: os.path.dirname(input.summary),
    threads: job_threads(CFG, "evaluate")
    resources:
        **job_resources(CFG, "evaluate"),
        **tracking_setting(CFG),
    # Never retried within a run: under Slurm a cell's post-training steps are one group job, and a
    # retry would run the whole group again (slurm/config.yaml). The next run does what is missing.
    retries: 0
    # first in a cell's post-training group: a member that fails stops the ones after it (the
    # group's inner Snakemake does not keep going), so the perplexity comes first and the
    # generation, which also needs the judge, last.
    priority: 2
    log:
        log_file("evaluate", "{cell}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm evaluate --spec {params.spec:q} --cell {wildcards.cell} --data {params.data:q} "
        "--run-dir {params.run_dir:q} --out {output:q} --tracking {resources.tracking:q} --threads {threads} > {log:q} 2>&1"
