# Teacher features, once per teacher and split, shared by all of that teacher's cells.

for _teacher in CFG.repa.teachers:
    if _teacher.built_by_workflow:

        rule:
            name:
                f"build_teacher_{_teacher.name.replace('-', '_').replace('.', '_')}"
            input:
                tokenizer=TOKENIZER,
                # a twin copies its teacher's architecture and tokenizer
                source=built_teacher_model(CFG, _teacher.control_of) if _teacher.control_of else [],
            output:
                directory(_teacher.name_or_path),
            params:
                spec=as_json(build_teacher_spec(CFG, _teacher.name)),
                teacher=_teacher.name,
            # it gates its teacher's features, which gate the teacher's cells (and a twin's build)
            priority: 10
            log:
                log_file("build_teacher", _teacher.name),
            conda:
                "../../envs/repa-mdlm.yaml"
            shell:
                "repa-mdlm build-teacher --spec {params.spec:q} --teacher {params.teacher:q} "
                "--tokenizer {input.tokenizer:q} --out {output:q} > {log:q} 2>&1"


TEACHER_FEATURES_COMMAND = (
    "repa-mdlm teacher-features --spec {params.spec:q} --teacher {wildcards.teacher} --data {params.data:q} "
    "--split {wildcards.split} --out {output.features:q} --threads {threads}"
)


rule teacher_features:
    input:
        manifest=MANIFEST,
        model=lambda wildcards: built_teacher_model(CFG, wildcards.teacher),
    output:
        features=f"{teacher_features_dir(CFG, '{teacher}')}/{{split}}.npy",
        meta=f"{teacher_features_dir(CFG, '{teacher}')}/{{split}}.json",
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        spec=lambda wildcards: as_json(teacher_spec(CFG, wildcards.teacher)),
    threads: job_threads(CFG, "teacher_features")
    # a teacher's features gate all of its cells: start them before any cell that can wait
    priority: 10
    resources:
        **job_resources(CFG, "teacher_features"),
    log:
        log_file("teacher_features", "{teacher}_{split}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        " ".join([TEACHER_FEATURES_COMMAND, "> {log:q} 2>&1"])


# Token-wise REPA's features: one row per span of characters both tokenizers cut alike, and the span map.
rule teacher_span_features:
    input:
        manifest=MANIFEST,
        model=lambda wildcards: built_teacher_model(CFG, wildcards.teacher),
    output:
        features=f"{teacher_features_dir(CFG, '{teacher}', 'tokenwise')}/{{split}}.npy",
        meta=f"{teacher_features_dir(CFG, '{teacher}', 'tokenwise')}/{{split}}.json",
        spans=f"{teacher_features_dir(CFG, '{teacher}', 'tokenwise')}/{{split}}.spans.npy",
    params:
        data=lambda wildcards, input: os.path.dirname(input.manifest),
        spec=lambda wildcards: as_json(teacher_spec(CFG, wildcards.teacher, "tokenwise")),
    threads: job_threads(CFG, "teacher_features")
    priority: 10
    resources:
        **job_resources(CFG, "teacher_features"),
    log:
        log_file("teacher_span_features", "{teacher}_{split}"),
    conda:
        "../../envs/repa-mdlm.yaml"
    shell:
        " ".join([TEACHER_FEATURES_COMMAND, "> {log:q} 2>&1"])
