# Evaluation. The towers are frozen in every fine-tune, so each model's towers run once over the
# evaluation data (eval_features); every checkpoint of that model is then evaluated from its projection
# matrices alone (evaluate_pretrained / evaluate_finetune: NumPy, no network). Exp 2 prunes the
# pretrained model's cached normalised image embeddings.


# The models whose evaluation features take the training pairs' features from their feature cache: no
# data.heldout_csv (the diagnostics' pairs are then the first training pairs, which the cache holds), a
# cached fine-tune of the model, no augmentation, and the same `finetune` and `evaluate` preprocessing. The
# job checks again (checkpoint hash, float32 towers) and encodes the pairs itself otherwise.
REUSED_FEATURE_CACHE = {
    m: feature_cache(m)[:1]  # the index (in cached mode)
    for m in dict.fromkeys(towers_of(f, r) for f in FT_MODELS for r in SEEDS)  # every pretraining fine-tuned from
    if m in TOWER_MODELS
    and not config["data"]["heldout_csv"]
    and gpus() == 0  # a cache extracted on GPUs holds fp16 autocast features: never reused, so not waited for
    and not config["finetune"]["augment"]
    and config["models"][m]["preprocess"]["finetune"] == config["models"][m]["preprocess"]["evaluate"]
}


rule eval_features:
    input:
        code=code("evaluate/run", "common/evalsets", "finetune/features", "common/data", "models/clip", "models/checkpoints", "evaluate/zeroshot"),
        checkpoint=PRETRAINED,
        sets=eval_inputs,
        pairs=config["data"]["heldout_csv"] or config["data"]["train_csv"],
        validated=EVAL_IMAGES_CHECKED,
        cache=lambda wildcards: REUSED_FEATURE_CACHE.get(wildcards.model, []),
    output:
        features=EVAL_FEATURES,
        projections=f"{RESULTS}/eval/pretrained/{{model}}/projections.npz",
    log:
        f"{LOGS}/eval_features/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/eval_features/{{model}}.tsv"
    params:
        config=CONFIG,
        settings={k: config["evaluate"][k] for k in ("sets", "templates")},
        preprocess=lambda wildcards: config["models"][wildcards.model]["preprocess"]["evaluate"],
        cache=lambda wildcards, input: f"--feature-cache {input.cache}" if input.cache else "",
    threads: 2
    resources:
        gpu=gpus(),
        mem_mb=mem_mb(4000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        LOG_VISIBLE_GPUS
        + "python -m workflow_scripts.evaluate.run features --config {params.config}"
        " --model {wildcards.model} --checkpoint {input.checkpoint} --out {output.features}"
        " --projections {output.projections} {params.cache} --gpus {resources.gpu} >> {log} 2>&1"


rule evaluate_pretrained:
    input:
        code=code("evaluate/run", "evaluate/zeroshot", "evaluate/purity"),
        features=eval_features_input,
        projections=lambda w: f"{RESULTS}/eval/pretrained/{towers_of(w.model)}/projections.npz",
    output:
        expand(f"{RESULTS}/eval/pretrained/{{{{model}}}}/{{name}}", name=EVAL_OUTPUTS),
        embeddings=expand(
            f"{RESULTS}/eval/pretrained/{{{{model}}}}/embeddings/{{evalset}}.npz", evalset=EVAL_SETS
        ),
    log:
        f"{LOGS}/evaluate/pretrained/{{model}}.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        # Exp 1 groups pretraining replicas (<name>-p<seed>) with their model
        replica=lambda wildcards: (
            f"--tag base_model={base_model(wildcards.model, config['models'][wildcards.model])}"
            f" --tag pretrain_seed={config['models'][wildcards.model].get('pretrain_seed', config['pretrain']['seed'])}"
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.evaluate.run projections --features {input.features}"
        " --projections {input.projections} --out-dir {params.out_dir} --save-embeddings"
        " --tag model={wildcards.model} --tag kind=pretrained {params.replica} > {log} 2>&1"


rule evaluate_finetune:
    input:
        code=code("evaluate/run", "evaluate/zeroshot", "evaluate/purity"),
        features=eval_features_input,
        projections=f"{FINETUNE_DIR}/projections.npz",
    output:
        expand(f"{RESULTS}/eval/{FINETUNE_SUBDIR}/{{name}}", name=EVAL_OUTPUTS, allow_missing=True),
    log:
        f"{LOGS}/evaluate/finetune/{{model}}/{{strategy}}/Cs{{cs}}/seed{{seed}}.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        pretraining=lambda w: towers_of(w.model, w.seed),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.evaluate.run projections --features {input.features}"
        " --projections {input.projections} --out-dir {params.out_dir}"
        " --tag model={wildcards.model} --tag kind=finetune --tag strategy={wildcards.strategy}"
        " --tag cs={wildcards.cs} --tag seed={wildcards.seed} --tag pretraining={params.pretraining}"
        " > {log} 2>&1"


rule pruning_sweep:
    input:
        code=code("evaluate/pruning", "evaluate/zeroshot", "evaluate/purity", "evaluate/run", "common/evalsets", "common/data"),
        projections=f"{RESULTS}/eval/pretrained/{{model}}/projections.npz",
        embeddings=lambda wildcards: expand(
            f"{RESULTS}/eval/pretrained/{{model}}/embeddings/{{evalset}}.npz",
            model=wildcards.model,
            evalset=PRUNING_SETS,
        ),
    output:
        table=f"{RESULTS}/eval/pruning/{{model}}.parquet",
        summary=f"{RESULTS}/eval/pruning/{{model}}_summary.parquet",
        csv=report(
            f"{RESULTS}/tables/exp2_pruning_{{model}}.csv",
            caption="report/exp2_table.rst",
            category=category("Exp 2: pruning by purity"),
            labels={"model": "{model}", "table": "pruning sweep (mean ± sd)"},
        ),
    log:
        f"{LOGS}/pruning/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/pruning/{{model}}.tsv"
    params:
        config=CONFIG,
        settings=config["evaluate"]["pruning"],
    threads: 1
    resources:
        mem_mb=mem_mb(3000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.evaluate.pruning --config {params.config} --model {wildcards.model}"
        " --projections {input.projections} --embeddings {input.embeddings} --out {output.table}"
        " --summary {output.summary} {output.csv} > {log} 2>&1"
