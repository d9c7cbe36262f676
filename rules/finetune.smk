# Stage 2: frozen-tower feature cache and projection-only fine-tunes per (model, strategy, Cs, seed).

from workflow_scripts.common.config import arm_finetune_settings


rule extract_features:
    input:
        code=code("finetune/features", "common/distributed", "common/data", "models/clip", "models/checkpoints"),
        checkpoint=PRETRAINED,
        csv=config["data"]["train_csv"],
        captions=config["data"]["captions"],
        validated=TRAIN_IMAGES_CHECKED,
    output:
        **FEATURE_CACHE,
    log:
        f"{LOGS}/extract_features/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{model}}.tsv"
    params:
        config=CONFIG,
        settings={k: config["finetune"][k] for k in ("views", "augment")},
        preprocess=lambda wildcards: config["models"][wildcards.model]["preprocess"]["finetune"],
        launch=launcher,
    threads: 2
    priority: 40  # on the chain pretrain -> features -> fine-tunes, the longest of the DAG
    resources:
        gpu=gpus(),
        mem_mb=mem_mb(4000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        LOG_VISIBLE_GPUS
        + "{params.launch} -m workflow_scripts.finetune.features"
        " --config {params.config} --model {wildcards.model} --checkpoint {input.checkpoint}"
        " --out {output.index} --gpus {resources.gpu} >> {log} 2>&1"


rule finetune:
    input:
        code=code("finetune/train", "finetune/adamw", "finetune/features", "common/distributed", "common/data", "models/clip", "models/checkpoints"),
        # replicate r starts from its pretraining's checkpoint and feature cache (finetune.pretraining); an
        # Exp 3 orthogonality arm <model>-ortho from its base model's
        pretrained=lambda w: PRETRAINED.format(model=towers_of(w.model, w.seed)),
        csv=training_csv,
        features=feature_cache_input,
        # end-to-end fine-tunes read the images themselves (cached ones through the feature cache)
        validated=TRAIN_IMAGES_CHECKED if config["finetune"]["mode"] == "end2end" else [],
    output:
        checkpoint=f"{FINETUNE_DIR}/checkpoint.pt",
        log=f"{FINETUNE_DIR}/log.jsonl",
        projections=f"{FINETUNE_DIR}/projections.npz",
    log:
        f"{LOGS}/finetune/{{model}}/{{strategy}}/Cs{{cs}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/finetune/{{model}}/{{strategy}}/Cs{{cs}}/seed{{seed}}.tsv"
    params:
        config=CONFIG,
        settings=lambda w: arm_finetune_settings(FINETUNE_SETTINGS, config["models"][w.model]),
        preprocess=lambda wildcards: config["models"][wildcards.model]["preprocess"]["finetune"],
        features=lambda wildcards, input: (
            f"--features {input.features[0]}" if input.features else ""
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        pretraining=lambda w: towers_of(w.model, w.seed),
        launch=launcher,
    threads: 1
    priority: 20  # the widest stage of the longest chain
    resources:
        gpu=gpus(),
        mem_mb=mem_mb(3000),
        runtime=120,
    conda:
        "../envs/workflow.yaml"
    shell:
        LOG_VISIBLE_GPUS
        + "{params.launch} -m workflow_scripts.finetune.train"
        " --config {params.config} --model {wildcards.model} --strategy {wildcards.strategy}"
        " --cs {wildcards.cs} --seed {wildcards.seed} --pretrained {input.pretrained}"
        " --pretraining {params.pretraining}"
        " --train-csv {input.csv} {params.features} --out-dir {params.out_dir}"
        " --gpus {resources.gpu} >> {log} 2>&1"


# Exp 3's orthogonality arm (finetune.orthogonality.arm): each <model>-ortho beside its base model.
if config["finetune"]["orthogonality"]["arm"]:
    SYSTEM_TARGETS.append(f"{TABLES}/exp3_orthogonality_arm.csv")

    rule orthogonality_arm_table:
        input:
            code=code("finetune/orthogonality_arm"),
            effective=f"{TABLES}/exp3_effective.parquet",
        output:
            report(
                f"{TABLES}/exp3_orthogonality_arm.csv",
                caption="report/exp3_orthogonality_arm_table.rst",
                category=category("Exp 3: misalignment"),
                labels={"table": "orthogonality arm"},
            ),
        log:
            f"{LOGS}/orthogonality_arm_table.log",
        params:
            config=CONFIG,
            settings=config["finetune"]["orthogonality"],
        threads: 1
        resources:
            mem_mb=mem_mb(1000),
            runtime=10,
        conda:
            "../envs/workflow.yaml"
        shell:
            "python -m workflow_scripts.finetune.orthogonality_arm --config {params.config}"
            " --effective {input.effective} --out {output} > {log} 2>&1"
