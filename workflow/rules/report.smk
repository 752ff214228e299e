# Runs table, Table 1 and Figures 2-5: from the results alone, never retraining.

TABLES = [f"{R}/tables/{name}" for name in ("runs.parquet", "runs.csv", "table1.csv", "table1.md", "table1.tex")]
FIGURES = [
    f"{R}/figures/{name}.{ext}"
    for name in ("fig2_training_curves", "fig3_teacher", "fig4_layer", "fig5_weight")
    for ext in ("png", "pdf")
]


rule aggregate:
    input:
        expand(f"{R}/runs/{{cell}}/metrics.json", cell=CELLS),
    output:
        TABLES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/aggregate.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm aggregate --metrics {input:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot:
    input:
        runs=f"{R}/tables/runs.parquet",
        logs=expand(f"{R}/runs/{{cell}}/train_log.jsonl", cell=CELLS),
    output:
        FIGURES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/plot.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm figures --runs {input.runs:q} --logs {input.logs:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule figures:
    input:
        TABLES,
        FIGURES,
