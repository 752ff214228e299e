# repa-mdlm: REPA for masked diffusion language models, from raw text to Table 1.
#
#   snakemake --cores all                      the grid in config.yaml
#   snakemake --profile profiles/demo          the offline demo (config/demo.yaml)
#   snakemake figures                          Table 1 (+ amortised), Figures 2-8, samples, from the results
#   snakemake --report report.html             everything above in one HTML report
#   snakemake results/runs/<cell>/metrics.json one cell
from snakemake.utils import min_version, validate

min_version("9.0")


# --configfile replaces config.yaml rather than merging into it, so a demo or site
# config never inherits stray keys of the paper's grid.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/halving.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/generative.smk"
include: "workflow/rules/zero_shot.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    figures,
    aggregate,
    compare,
    plot,
    generative_report,
    zero_shot_report,


rule all:
    input:
        rules.figures.input,
    default_target: True
