# Corpus -> student tokenizer -> packed token arrays (train/val/test) + manifest.


rule tokenizer:
    output:
        directory(f"{DATA}/tokenizer"),
    params:
        spec=as_json(data_spec(CFG)),
    log:
        f"{R}/logs/tokenizer.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm tokenizer --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule tokenize:
    input:
        tokenizer=f"{DATA}/tokenizer",
    output:
        manifest=f"{DATA}/manifest.json",
        splits=expand(f"{DATA}/{{split}}.bin", split=["train", "val", "test"]),
    params:
        data=lambda wildcards, output: os.path.dirname(output.manifest),
        spec=as_json(data_spec(CFG)),
    log:
        f"{R}/logs/tokenize.log",
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm tokenize --spec {params.spec:q} --tokenizer {input.tokenizer:q} --out {params.data:q} > {log:q} 2>&1"
