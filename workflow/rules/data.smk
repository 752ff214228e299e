# Corpus -> student tokenizer -> packed token arrays (train/val/test) + manifest.


rule tokenizer:
    output:
        directory(TOKENIZER),
    params:
        spec=as_json(data_spec(CFG)),
    log:
        log_file("tokenizer"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm tokenizer --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule tokenize:
    input:
        tokenizer=TOKENIZER,
    output:
        manifest=MANIFEST,
        splits=[f"{DATA}/{layout.split_file(split)}" for split in layout.SPLITS],
    params:
        data=lambda wildcards, output: os.path.dirname(output.manifest),
        spec=as_json(data_spec(CFG)),
    log:
        log_file("tokenize"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        "repa-mdlm tokenize --spec {params.spec:q} --tokenizer {input.tokenizer:q} --out {params.data:q} > {log:q} 2>&1"
