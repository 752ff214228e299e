# Successive halving (config: halving; off by default). Every REPA cell trains to the first rung's step
# (train_rung: the first steps of its full run, its checkpoint kept), the checkpoint job halving_rung
# judges the configurations by their seeds' mean validation PPL and writes its decisions
# (tables/halving/rung<k>.csv) before the next rung starts; the kept ones go on from their checkpoints,
# and those the last rung keeps train to the end (rule train) and are evaluated. The baseline is never
# judged. The rule itself: src/repa_mdlm/analysis/halving.py; what the rules read: common.smk.


# Defined for a halving sweep alone: the full grid's workflow is the one without halving.
if JUDGED_RUNGS:

    rule train_rung:
        input:
            manifest=MANIFEST,
            features=lambda wildcards: feature_inputs(CFG, CELLS[wildcards.cell]),
            guard=train_guard,
            previous_rung=lambda wildcards: rung_before(wildcards.cell, wildcards.step),
        output:
            rung_record("{cell}", "{step}"),
        params:
            data=lambda wildcards, input: os.path.dirname(input.manifest),
            spec=lambda wildcards: as_json(cell_spec(CFG, CELLS[wildcards.cell])),
            run_dir=lambda wildcards: layout.run_dir(R, wildcards.cell),
            features=lambda wildcards, input: os.path.dirname(input.features[0]) if input.features else "",
        wildcard_constraints:
            step="|".join(str(s) for s in JUDGED_STEPS) or "NO_RUNG",
        threads: job_threads(CFG, "train")
        resources:
            **job_resources(CFG, "train"),
            **throughput_setting_codes(CFG.train),
            **tracking_setting(CFG),
        log:
            log_file("train_rung", "{cell}_step{step}"),
        conda:
            "../../envs/repa-mdlm.yaml"
        shell:
            " ".join([TRAIN_COMMAND, "--rung-step {wildcards.step} --rung-record {output:q} >> {log:q} 2>&1"])


    checkpoint halving_rung:
        input:
            judged_at,
        output:
            f"{R}/{layout.TABLES}/{layout.rung_decisions('{rung}')}",
        params:
            eta=CFG.halving.eta,
        log:
            log_file("halving_rung", "rung{rung}"),
        conda:
            "../../envs/repa-mdlm.yaml"
        shell:
            "repa-mdlm judge-rung --records {input:q} --rung {wildcards.rung} --eta {params.eta:q} --out {output:q} "
            "> {log:q} 2>&1"


    localrules:
        halving_rung,


# Every rung's decisions in one table, in the report beside Table 1 (whose note counts the stopped).
HALVING_TABLES = [f"{R}/{layout.TABLES}/{name}" for name in layout.HALVING_FILES] if JUDGED_RUNGS else []
HALVING_FIGURES = [f"{R}/{layout.FIGURES}/{layout.HALVING_FIGURE}.{ext}" for ext in layout.FIGURE_FORMATS] \
    if JUDGED_RUNGS else []


if JUDGED_RUNGS:

    rule halving_report:
        input:
            decisions=[f"{R}/{layout.TABLES}/{layout.rung_decisions(rung)}" for rung in JUDGED_RUNGS],
            stopped=stopped_records,
            logs=each_finished_cell(run_file(layout.TRAIN_LOG)),
        output:
            HALVING_TABLES[:-1]
            + [
                report(HALVING_TABLES[-1], caption="../report/halving.rst", category="Table 1",
                       labels={"variant": "successive halving"}),
                HALVING_FIGURES[1],
                report(HALVING_FIGURES[0], caption="../report/halving.rst", category="Figures",
                       subcategory="Successive halving", labels={"figure": "halving"}),
            ],
        params:
            out_dir=lambda wildcards, output: os.path.dirname(output[0]),
            figures_dir=lambda wildcards, output: os.path.dirname(output[-1]),
            steps=CFG.train.steps,
            baselines=sum(cell.is_baseline for cell in CELLS.values()),
            eta=CFG.halving.eta,
        log:
            log_file("halving_report"),
        conda:
            "../../envs/repa-mdlm.yaml"
        shell:
            "repa-mdlm halving-report --decisions {input.decisions:q} --out-dir {params.out_dir:q} --steps {params.steps:q} "
            "--baselines {params.baselines:q} --eta {params.eta:q} --stopped {input.stopped:q} --logs {input.logs:q} "
            "--figures-dir {params.figures_dir:q} > {log:q} 2>&1"

    localrules:
        halving_report,
