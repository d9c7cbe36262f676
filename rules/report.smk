# Aggregation (Exp 1 and Exp 3 tables), figures and the inputs of report.html.


rule aggregate:
    input:
        code=code("report/aggregate", "report/replicates", "common/intervals", "evaluate/purity", "evaluate/run"),
        metrics=eval_tables("metrics.parquet"),
        purity=eval_tables("purity.parquet"),
        histograms=eval_tables("histograms.parquet"),
        predictions=eval_tables("predictions.npz"),
        misalignment=f"{MISALIGN}/summary.parquet",
        eval_features=expand(EVAL_FEATURES, model=TOWER_MODELS),
        # how far pretraining moved each pretrained model's projections from their initialisation
        initial=expand(f"{RESULTS}/pretrain/{{model}}/initial_projections.npz", model=PRETRAIN_MODELS),
        trained=expand(f"{RESULTS}/eval/pretrained/{{model}}/projections.npz", model=PRETRAIN_MODELS),
    output:
        exp1=report_table("exp1", "exp1_table", category("Exp 1: CLIP vs LaCLIP"), "CLIP vs LaCLIP"),
        exp3_purity=report_table(
            "exp3_purity", "exp3_purity_table", category("Exp 3: misalignment"), "purity vs Cs"
        ),
        exp3_metrics=report_table(
            "exp3_metrics", "exp3_metrics_table", category("Exp 3: misalignment"), "accuracy vs Cs"
        ),
        exp3_spearman=report_table(
            "exp3_spearman",
            "exp3_spearman_table",
            category("Exp 3: misalignment"),
            "purity-accuracy correlation",
        ),
        exp1_differences=report_table(
            "exp1_differences",
            "exp1_differences_table",
            category("Exp 1: CLIP vs LaCLIP"),
            "accuracy differences",
        ),
        exp1_by_seed=report_table(
            "exp1_by_seed", "exp1_by_seed_table", category("Exp 1: CLIP vs LaCLIP"), "per pretraining seed"
        ),
        exp1_projections=report_table(
            "exp1_projections",
            "exp1_projections_table",
            category("Exp 1: CLIP vs LaCLIP"),
            "projection drift from initialisation",
        ),
        exp3_within_groups=report_table(
            "exp3_within_groups",
            "exp3_within_groups_table",
            category("Exp 3: misalignment"),
            "purity-accuracy within treatment groups",
        ),
        exp3_replicates=report_table(
            "exp3_replicates",
            "exp3_replicates_table",
            category("Exp 3: misalignment"),
            "per-replicate effects",
        ),
        evaluation_settings=report_table(
            "evaluation_settings",
            "evaluation_settings_table",
            category("Models"),
            "evaluation settings per set",
        ),
        exp3_effective=report_table(
            "exp3_effective",
            "exp3_effective_table",
            category("Exp 3: misalignment"),
            "against effective misalignment",
        ),
        parquet=expand(
            f"{TABLES}/{{name}}.parquet",
            name=[
                "exp1",
                "exp1_differences",
                "exp1_by_seed",
                "exp1_projections",
                "exp3_within_groups",
                "exp3_replicates",
                "exp3_purity",
                "exp3_metrics",
                "exp3_spearman",
                "exp3_effective",
                "exp3_histograms",
                "evaluation_settings",
            ],
        ),
        histograms=f"{TABLES}/exp3_histograms.csv",
    log:
        f"{LOGS}/aggregate.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.histograms),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.report.aggregate --metrics {input.metrics} --purity {input.purity}"
        " --histograms {input.histograms} --predictions {input.predictions}"
        " --misalignment {input.misalignment} --eval-features {input.eval_features}"
        " --initial-projections {input.initial} --pretrained-projections {input.trained}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule figure:
    input:
        code=code("report/figures", "report/aggregate"),
        table=lambda wildcards: FIGURE_SPECS[wildcards.figure][1],
    output:
        png=f"{FIGURES}/{{figure}}.png",
        svg=report(
            f"{FIGURES}/{{figure}}.svg",
            caption="report/figure.rst",
            category=lambda wildcards: FIGURE_SPECS[wildcards.figure][4],
            labels=lambda wildcards: {"figure": wildcards.figure.replace("_", " ")},
        ),
    log:
        f"{LOGS}/figure/{{figure}}.log",
    params:
        kind=lambda wildcards: FIGURE_SPECS[wildcards.figure][0],
        options=lambda wildcards: FIGURE_SPECS[wildcards.figure][2],
    wildcard_constraints:
        figure="|".join(FIGURE_SPECS),
    threads: 1
    resources:
        mem_mb=mem_mb(1500),
        runtime=10,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.report.figures {params.kind} --table {input.table}"
        " --out {output.png} {output.svg} {params.options} > {log} 2>&1"
