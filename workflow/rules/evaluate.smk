# Test ELBO perplexity (no REPA term), several stratified t draws, standard error.


rule evaluate:
    input:
        model=f"{R}/runs/{{cell}}/model",
        summary=f"{R}/runs/{{cell}}/train_summary.json",
        manifest=f"{DATA}/manifest.json",
    output:
        f"{R}/runs/{{cell}}/metrics.json",
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        spec=lambda wildcards: as_json(cell_spec(CFG, CELLS[wildcards.cell])),
        run_dir=lambda wildcards, input: os.path.dirname(input.summary),
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    log:
        f"{R}/logs/evaluate/{{cell}}.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm evaluate --spec {params.spec:q} --cell {wildcards.cell} --data {params.data:q} "
        "--run-dir {params.run_dir:q} --out {output:q} --threads {threads} > {log:q} 2>&1"
