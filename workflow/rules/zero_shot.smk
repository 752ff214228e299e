# Zero-shot perplexity: every cell's test ELBO on other corpora (evaluate.extra_test_sets), each
# tokenized once with the student's tokenizer. These jobs read the trained model; adding or
# changing a set never retrains a cell.

ZERO_SHOT_SETS = [s.name for s in CFG.evaluate.zero_shot_sets()]
for _skipped in sorted({s.name for s in CFG.evaluate.extra_test_sets} - set(ZERO_SHOT_SETS)):
    logger.warning(
        f"evaluate.extra_test_sets: {_skipped!r} is optional and its files are missing, so it is skipped "
        "(config/demo.yaml's fortunes-br: apt install fortunes-br)"
    )
ZERO_SHOT_DATA = f"{DATA}/{layout.ZERO_SHOT}"


wildcard_constraints:
    test_set="|".join(re.escape(name) for name in ZERO_SHOT_SETS) or "NO_SET",


rule tokenize_zero_shot:
    input:
        tokenizer=TOKENIZER,
    output:
        manifest=f"{ZERO_SHOT_DATA}/{{test_set}}/{layout.MANIFEST}",
        test=f"{ZERO_SHOT_DATA}/{{test_set}}/{layout.split_file('test')}",
    params:
        out=lambda wildcards, output: os.path.dirname(output.manifest),
        spec=lambda wildcards: as_json(zero_shot_data_spec(CFG, wildcards.test_set)),
    log:
        log_file("tokenize_zero_shot", "{test_set}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm tokenize --spec {params.spec:q} --tokenizer {input.tokenizer:q} --out {params.out:q} "
        "--test-only > {log:q} 2>&1"


rule zero_shot:
    input:
        model=run_file(layout.MODEL),
        summary=run_file(layout.TRAIN_SUMMARY),
        manifest=f"{ZERO_SHOT_DATA}/{{test_set}}/{layout.MANIFEST}",
    output:
        run_file(layout.zero_shot_result("{test_set}")),
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        run_dir=lambda wildcards, input: os.path.dirname(input.summary),
        spec=as_json(zero_shot_spec(CFG)),
    threads: job_threads(CFG, "evaluate")
    resources:
        **job_resources(CFG, "evaluate"),
        **tracking_setting(CFG),  # unused here; a Slurm group's members must agree on string resources
    # Never retried within a run: under Slurm a cell's post-training steps are one group job, and a
    # retry would run the whole group again (slurm/config.yaml). The next run does what is missing.
    retries: 0
    # second in a cell's post-training group (see the evaluate rule).
    priority: 1
    log:
        log_file("zero_shot", "{cell}_{test_set}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm zero-shot --spec {params.spec:q} --cell {wildcards.cell} --data {params.data:q} "
        "--run-dir {params.run_dir:q} --test-set {wildcards.test_set} --out {output:q} --threads {threads} "
        "> {log:q} 2>&1"


ZERO_SHOT_TABLES = [f"{R}/{layout.TABLES}/{name}" for name in layout.ZERO_SHOT_TABLE_FILES]
ZERO_SHOT_OUTPUTS = ZERO_SHOT_TABLES if ZERO_SHOT_SETS else []
"""What `snakemake figures` (and the default target) asks of this file; none without extra sets."""


rule zero_shot_report:
    input:
        each_finished_cell(run_file(layout.zero_shot_result("{test_set}")), test_set=ZERO_SHOT_SETS),
    output:
        ZERO_SHOT_TABLES[:-1]
        + [report(ZERO_SHOT_TABLES[-1], caption="../report/zero_shot.rst", category="Zero-shot perplexity")],
    params:
        tables=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        log_file("zero_shot_report"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm zero-shot-report --results {input:q} --tables-dir {params.tables:q} > {log:q} 2>&1"
