# Seed 002: sparse concept decompositions of the embeddings (SpLiCE; workflow_scripts/sparse).
#   caption phrases -> vocabulary.txt (SpLiCE format) -> per model: the frozen towers' features of the
#   concepts and of a sample of training pairs, images and captions (concepts.npz) -> per model: every
#   checkpoint's dictionary, image and caption means and non-negative Lasso sweep over every evaluation set
#   and the held-out pairs' images and captions, from its projections alone (sweep/l0/concepts.parquet)
#   -> tables and figures (report category "Sparse concepts (SpLiCE)").
# The decompositions run one job per model, not per checkpoint: a job's ~3 s of Python start-up is more
# than a checkpoint's whole sweep.

from workflow_scripts.sparse import paths as sparse_paths

SPARSE = f"{RESULTS}/sparse"
SPARSE_ON = bool(config["sparse"]["enabled"])
SPARSE_CATEGORY = category("Sparse concepts (SpLiCE)")
SPARSE_VOCABULARY = config["sparse"]["vocabulary"] or f"{SPARSE}/vocabulary.txt"
SPARSE_TABLES = ["sparse_sweep", "sparse_memory", "sparse_runs", "sparse_vs_purity", "sparse_spearman", "sparse_concepts"]
SPARSE_FIGURES = ["sparse_accuracy_vs_l0", "sparse_accuracy_vs_purity", "sparse_examples"]
# (tags, projections.npz) of every checkpoint a model's decomposition job reads
# (the first pretraining of each model and the fine-tune replicates that start from it)
SPARSE_RUNS = {
    m: sparse_paths.checkpoint_runs(
        m, RESULTS, FINETUNE_DIR, FT_MODELS, FINETUNE_RUNS, first_pretraining_seeds(m), towers_of(m)
    )
    for m in FIRST_PRETRAINING_MODELS
}
SPARSE_PAIRS_CSV = config["data"].get("heldout_csv") or config["data"]["train_csv"]  # the pairs' captions
SPARSE_TABLE_LABELS = {
    "sparse_sweep": "accuracy, l0 and cosine per lambda, set and modality",
    "sparse_memory": "memory dense vs sparse",
    "sparse_runs": "per fine-tune read-offs and purity",
    "sparse_vs_purity": "sparsity vs purity and Cs",
    "sparse_spearman": "sparsity-purity correlation",
    "sparse_concepts": "top concepts per class and image",
}
if SPARSE_ON:
    SYSTEM_TARGETS.extend(
        [f"{TABLES}/{t}.csv" for t in SPARSE_TABLES] + [f"{FIGURES}/{f}.svg" for f in SPARSE_FIGURES]
    )


if not config["sparse"]["vocabulary"]:

    rule sparse_vocabulary:
        input:
            code=code("sparse.dictionary", "common/data"),
            captions=config["data"]["captions"],
        output:
            SPARSE_VOCABULARY,
        log:
            f"{LOGS}/sparse/vocabulary.log",
        params:
            settings={k: config["sparse"][k] for k in ("top_k", "stop_words")},
        threads: 1
        resources:
            mem_mb=mem_mb(1000),
            runtime=10,
        conda:
            "../envs/workflow.yaml"
        shell:
            "python -m workflow_scripts.sparse.dictionary --captions {input.captions}"
            " --top-k {params.settings[top_k]} --stop-words {params.settings[stop_words]} --out {output} > {log} 2>&1"


rule sparse_encode:
    input:
        code=code("sparse.encode", "sparse.dictionary", "finetune/features", "models/clip", "models/checkpoints", "common/data"),
        checkpoint=PRETRAINED,
        vocabulary=SPARSE_VOCABULARY,
        csv=config["data"]["train_csv"],
        # it reads training images (their mean embedding): only once they are validated, and again when
        # one of them changes
        validated=TRAIN_IMAGES_CHECKED,
    output:
        f"{SPARSE}/{{model}}/concepts.npz",
    log:
        f"{LOGS}/sparse/encode/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sparse/encode/{{model}}.tsv"
    params:
        config=CONFIG,
        settings={k: config["sparse"][k] for k in ("top_k", "template", "mean_images", "seed", "captions")},
        preprocess=lambda wildcards: config["models"][wildcards.model]["preprocess"]["evaluate"],
    threads: 1
    resources:
        mem_mb=mem_mb(3000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.sparse.encode --config {params.config} --model {wildcards.model}"
        " --checkpoint {input.checkpoint} --vocabulary {input.vocabulary} --out {output} > {log} 2>&1"


rule sparse_evaluate:
    input:
        code=code("sparse.evaluate", "sparse.solver", "sparse.centring", "evaluate/run", "evaluate/zeroshot"),
        concepts=lambda w: f"{SPARSE}/{towers_of(w.model)}/concepts.npz",  # an arm's towers are its base's
        features=eval_features_input,
        projections=lambda wildcards: [p for _, p in SPARSE_RUNS[wildcards.model]],
    output:
        sweep=f"{SPARSE}/{{model}}/sweep.parquet",
        l0=f"{SPARSE}/{{model}}/l0.parquet",
        concepts=f"{SPARSE}/{{model}}/concepts.parquet",
    log:
        f"{LOGS}/sparse/evaluate/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sparse/evaluate/{{model}}.tsv"
    params:
        config=CONFIG,
        settings={k: v for k, v in config["sparse"].items() if k not in ("enabled", "target_l0", "target_relative_accuracy")},
        runs=lambda wildcards: sparse_paths.run_arguments(SPARSE_RUNS[wildcards.model]),
        out_dir=lambda wildcards, output: os.path.dirname(output.sweep),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.sparse.evaluate --config {params.config} --model {wildcards.model}"
        " --concepts {input.concepts} --features {input.features} {params.runs} --out-dir {params.out_dir}"
        " > {log} 2>&1"


rule sparse_report:
    input:
        code=code("sparse.report", "sparse.aggregate", "report/aggregate", "common/intervals", "report/figures", "common/data"),
        sweeps=expand(f"{SPARSE}/{{model}}/sweep.parquet", model=FIRST_PRETRAINING_MODELS),
        concepts=expand(f"{SPARSE}/{{model}}/concepts.parquet", model=FIRST_PRETRAINING_MODELS),
        purity=eval_tables("purity.parquet"),
        misalignment=f"{MISALIGN}/summary.parquet",
        sets=[eval_set_input(s) for s in sparse_paths.decomposed_sets(config)],
        pairs_csv=SPARSE_PAIRS_CSV,
    output:
        tables=[
            report(
                f"{TABLES}/{t}.csv",
                caption=f"report/{t}.rst",
                category=SPARSE_CATEGORY,
                labels={"table": SPARSE_TABLE_LABELS[t]},
            )
            for t in SPARSE_TABLES
        ],
        parquet=expand(f"{TABLES}/{{name}}.parquet", name=SPARSE_TABLES),
        png=expand(f"{FIGURES}/{{name}}.png", name=SPARSE_FIGURES),
        svg=[
            report(
                f"{FIGURES}/{f}.svg",
                caption=f"report/{f}.rst",
                category=SPARSE_CATEGORY,
                labels={"figure": f.replace("_", " ")},
            )
            for f in SPARSE_FIGURES
        ],
    log:
        f"{LOGS}/sparse/report.log",
    benchmark:
        f"{BENCHMARKS}/sparse/report.tsv"
    params:
        config=CONFIG,
        settings={k: config["sparse"][k] for k in ("target_l0", "target_relative_accuracy", "sets", "examples")},
        tables=lambda wildcards, output: os.path.dirname(output.parquet[0]),
        figures=lambda wildcards, output: os.path.dirname(output.png[0]),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.sparse.report --config {params.config} --sweeps {input.sweeps}"
        " --concepts {input.concepts} --purity {input.purity} --misalignment {input.misalignment}"
        " --pairs-csv {input.pairs_csv} --tables {params.tables} --figures {params.figures} > {log} 2>&1"
