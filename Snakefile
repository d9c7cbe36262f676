# Feature purity and caption misalignment in CLIP models: the reference workflow.
#
#   snakemake --profile profiles/default            # embedded default, ends with results/report.html via make run
#   snakemake --profile slurm                       # the same DAG on a SLURM GPU cluster (docs/cluster.md)
#
# DAG: world -> caption neighbours -> swapped captions per (strategy, Cs) -> training CSVs ->
#      pretrain/convert models -> feature cache -> projection fine-tunes -> purity / zero-shot /
#      pruning -> aggregation -> figures -> report.html

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless config files are given with --configfile: those replace it rather than
# being merged into it (a real-data config must not inherit the synthetic world's evaluation sets).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



report: "rules/report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    model="|".join(MODELS),
    strategy="|".join(STRATEGIES + [CONTROL]),
    cs="[0-9.]+",
    seed="[0-9]+",
    evalset="|".join(EVAL_SETS),


include: "rules/validation.smk"
include: "rules/world.smk"
include: "rules/misalign.smk"
include: "rules/models.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/multilingual.smk"
include: "rules/clip4dm.smk"
include: "rules/sparse.smk"


rule all:
    default_target: True
    input:
        all_targets(),
