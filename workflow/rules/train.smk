# One job per cell. The rolling checkpoint in the run folder is not an output, so a
# failed or preempted job keeps it and the next attempt resumes from it (under halving, the last
# rung's: the rung records are no input here, so turning halving on or off re-trains no finished
# cell). `exec`: the trainer replaces the shell, so Slurm's SIGTERM reaches it alone and its exit
# code 75 ("checkpointed, run again") is what Snakemake sees.


TRAIN_COMMAND = (
    "exec repa-mdlm train --spec {params.spec:q} --cell {wildcards.cell} --data {params.data:q} "
    "--run-dir {params.run_dir:q} --features={params.features:q} "
    "--prefetch-batches {resources.prefetch_batches} --compile {resources.compile} "
    "--activation-checkpointing {resources.activation_checkpointing} "
    "--tracking {resources.tracking:q} --threads {threads} --nproc {resources.gpu}"
)
"""The train job's command; train_rung (halving.smk) adds the rung's step to it."""


rule train:
    input:
        manifest=MANIFEST,
        features=lambda wildcards: feature_inputs(CFG, CELLS[wildcards.cell]),
        guard=train_guard,
    output:
        model=directory(run_file(layout.MODEL)),
        train_log=run_file(layout.TRAIN_LOG),
        summary=run_file(layout.TRAIN_SUMMARY),
        config=run_file(layout.RUN_CONFIG),
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        spec=lambda wildcards: as_json(cell_spec(CFG, CELLS[wildcards.cell])),
        run_dir=lambda wildcards, output: os.path.dirname(output.summary),
        features=lambda wildcards, input: os.path.dirname(input.features[0]) if input.features else "",
    threads: job_threads(CFG, "train")
    resources:
        **job_resources(CFG, "train"),
        **throughput_setting_codes(CFG.train),  # speed-only settings: resources, never a re-run
        **tracking_setting(CFG),
    log:
        log_file("train", "{cell}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        TRAIN_COMMAND + " >> {log:q} 2>&1"
