# Aggregation (Exp 1 and Exp 3 tables), figures and the inputs of report.html.

TABLES = "results/tables"
FIGURES = "results/figures"


def eval_tables(kind):
    """Per-checkpoint tables of one kind (metrics, purity, histograms): pretrained models + fine-tunes."""
    pretrained = expand(f"results/eval/pretrained/{{model}}/{kind}.parquet", model=MODELS)
    finetuned = expand(
        "results/eval/finetune/{model}/{strategy}/Cs{cs}/seed{seed}/" + kind + ".parquet",
        model=FT_MODELS,
        strategy=STRATEGIES,
        cs=CS_LABELS,
        seed=SEEDS,
    )
    return pretrained + finetuned


def report_table(name, caption, category, label):
    return report(
        f"{TABLES}/{name}.csv",
        caption=f"report/{caption}.rst",
        category=category,
        labels={"table": label},
    )


rule aggregate:
    input:
        code=code("aggregate"),
        metrics=eval_tables("metrics"),
        purity=eval_tables("purity"),
        histograms=eval_tables("histograms"),
    output:
        exp1=report_table("exp1", "exp1_table", "3. Exp 1: CLIP vs LaCLIP", "CLIP vs LaCLIP"),
        exp3_purity=report_table(
            "exp3_purity", "exp3_purity_table", "5. Exp 3: misalignment", "purity vs Cs"
        ),
        exp3_metrics=report_table(
            "exp3_metrics", "exp3_metrics_table", "5. Exp 3: misalignment", "accuracy vs Cs"
        ),
        exp3_spearman=report_table(
            "exp3_spearman",
            "exp3_spearman_table",
            "5. Exp 3: misalignment",
            "purity-accuracy correlation",
        ),
        parquet=expand(
            TABLES + "/{name}.parquet",
            name=["exp1", "exp3_purity", "exp3_metrics", "exp3_spearman", "exp3_histograms"],
        ),
        histograms=f"{TABLES}/exp3_histograms.csv",
    log:
        "logs/aggregate.log",
    params:
        out_dir=TABLES,
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    shell:
        "python -m workflow_scripts.aggregate --metrics {input.metrics} --purity {input.purity}"
        " --histograms {input.histograms} --out-dir {params.out_dir} > {log} 2>&1"


FIGURE_SPECS = {
    # name: (figures.py sub-command, table, extra options, caption, category)
    "exp3_purity_vs_cs": (
        "purity-vs-cs",
        f"{TABLES}/exp3_purity.parquet",
        "--projection text",
        "fig_purity_vs_cs",
        "5. Exp 3: misalignment",
    ),
    "exp3_image_purity_vs_cs": (
        "purity-vs-cs",
        f"{TABLES}/exp3_purity.parquet",
        "--projection image",
        "fig_purity_vs_cs",
        "5. Exp 3: misalignment",
    ),
    "exp3_accuracy_vs_cs": (
        "accuracy-vs-cs",
        f"{TABLES}/exp3_metrics.parquet",
        "--metric acc1",
        "fig_accuracy_vs_cs",
        "5. Exp 3: misalignment",
    ),
    "exp3_cosine_histograms": (
        "cosine-hist",
        f"{TABLES}/exp3_histograms.parquet",
        "--projection text",
        "fig_cosine_histograms",
        "5. Exp 3: misalignment",
    ),
    "exp1_clip_vs_laclip": (
        "exp1",
        f"{TABLES}/exp1.parquet",
        "",
        "fig_exp1",
        "3. Exp 1: CLIP vs LaCLIP",
    ),
}
FIGURE_SPECS.update(
    {
        f"exp2_pruning_{model}": (
            "pruning",
            f"results/eval/pruning/{model}.parquet",
            "--metric acc1",
            "fig_pruning",
            "4. Exp 2: pruning by purity",
        )
        for model in PRUNING_MODELS
    }
)


rule figure:
    input:
        code=code("figures", "aggregate"),
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
        "logs/figure/{figure}.log",
    params:
        kind=lambda wildcards: FIGURE_SPECS[wildcards.figure][0],
        options=lambda wildcards: FIGURE_SPECS[wildcards.figure][2],
    wildcard_constraints:
        figure="|".join(FIGURE_SPECS),
    threads: 1
    resources:
        mem_mb=mem_mb(1500),
        runtime=10,
    shell:
        "python -m workflow_scripts.figures {params.kind} --table {input.table}"
        " --out {output.png} {output.svg} {params.options} > {log} 2>&1"


def all_targets():
    """Everything the study produces (the inputs of `rule all`, hence of report.html)."""
    targets = expand(f"{FIGURES}/{{figure}}.svg", figure=FIGURE_SPECS)
    targets += expand(f"{TABLES}/exp2_pruning_{{model}}.csv", model=PRUNING_MODELS)
    targets += [f"{TABLES}/exp1.csv", f"{TABLES}/exp3_spearman.csv"]
    if config["world"]["enabled"]:
        targets.append(f"{WORLD}/world.json")
    targets += expand("results/pretrain/{model}/checkpoint.pt", model=MODELS)
    return targets
