# Seed 003: multilingual alignment through the image pivot (workflow_scripts/multilingual).
#   captions per language (embedded world) -> multilingual text encoder (embedded) -> cached embeddings
#   (or real data: text embedding files, or multilingual.captions CSVs + a local SentenceTransformer)
#   -> alignment-head sweep -> evaluation before/after -> tables and figures (its report section)
# The image side is always the base model's (models.<base>): its feature cache and evaluation features.
# Off in rule all unless multilingual.enabled; `make multilingual` builds the outputs either way.

from workflow_scripts.multilingual import paths as ml_paths

ML = f"{RESULTS}/multilingual"
ML_MODELS = list(config["multilingual"]["models"])
ML_CATEGORY = category("Multilingual alignment (image pivot)")
ML_TABLES = ["retrieval", "headline", "pivot", "zero_shot", "diagnostics", "gram"]
ML_FIGURES = ["retrieval", "gram"]


ML_OUTPUTS = [f"{TABLES}/multilingual_{t}.csv" for t in ML_TABLES] + [
    f"{FIGURES}/multilingual_{f}.svg" for f in ML_FIGURES
]
if config["multilingual"]["enabled"]:
    SYSTEM_TARGETS.extend(ML_OUTPUTS)


wildcard_constraints:
    mlmodel="|".join(ML_MODELS),


if config["world"]["enabled"]:

    rule multilingual_captions:
        input:
            code=code("multilingual.world", "multilingual.lexicon", "world/synthetic", "common/data"),
            attributes=f"{WORLD}/train_attributes.csv",
            captions=f"{WORLD}/captions.txt",
            heldout=f"{WORLD}/heldout.csv",
            info=f"{WORLD}/world.json",
        output:
            train=f"{ML}/captions/train.parquet",
            heldout=f"{ML}/captions/heldout.parquet",
        log:
            f"{LOGS}/multilingual/captions.log",
        benchmark:
            f"{BENCHMARKS}/multilingual/captions.tsv"
        params:
            config=CONFIG,
            settings={k: config["multilingual"][k] for k in ("languages", "seed")},
            world=lambda wildcards, input: os.path.dirname(input.info),
        threads: 1
        priority: 30  # a chain of single jobs: run it beside the fine-tunes, not after them
        resources:
            mem_mb=mem_mb(2000),
            runtime=15,
        conda:
            "../envs/workflow.yaml"
        shell:
            "python -m workflow_scripts.multilingual.world --config {params.config} --world {params.world}"
            " --train-out {output.train} --heldout-out {output.heldout} > {log} 2>&1"


rule multilingual_encoder:
    input:
        unpack(lambda w: ml_paths.base_inputs(config, w.mlmodel, RESULTS, FEATURE_CACHE, EVAL_FEATURES)),
        code=code("multilingual.encoder", "multilingual.images", "models/pretrain", "finetune/train", "models/clip", "models/checkpoints",
                  "evaluate/run", "finetune/features"),
        checkpoint=lambda w: PRETRAINED.format(model=config["multilingual"]["models"][w.mlmodel]["base"]),
        captions=f"{ML}/captions/train.parquet",
    output:
        checkpoint=f"{ML}/encoder/{{mlmodel}}/checkpoint.pt",
        train_log=f"{ML}/encoder/{{mlmodel}}/log.jsonl",
    log:
        f"{LOGS}/multilingual/encoder/{{mlmodel}}.log",
    benchmark:
        f"{BENCHMARKS}/multilingual/encoder/{{mlmodel}}.tsv"
    params:
        config=CONFIG,
        settings=lambda w: {**config["multilingual"]["models"][w.mlmodel], "seed": config["multilingual"]["seed"],
                                    "languages": config["multilingual"]["languages"]},
    threads: 1
    priority: 30
    resources:
        mem_mb=mem_mb(3000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.multilingual.encoder --config {params.config} --model {wildcards.mlmodel}"
        " --base-checkpoint {input.checkpoint} --features {input.features[0]}"
        " --projections {input.projections} --captions {input.captions} --out {output.checkpoint}"
        " --train-log {output.train_log} --threads {threads} > {log} 2>&1"


rule multilingual_embed:
    input:
        unpack(lambda w: ml_paths.embed_inputs(config, w.mlmodel, RESULTS, FEATURE_CACHE, EVAL_FEATURES)),
        code=code("multilingual.embed", "multilingual.paths", "multilingual.images", "multilingual.lexicon",
                  "multilingual.sentence_tower", "models/clip", "models/checkpoints", "evaluate/run", "finetune/features", "evaluate/zeroshot", "world/synthetic",
                  "common/data"),
    output:
        f"{ML}/embeddings/{{mlmodel}}.npz",
    log:
        f"{LOGS}/multilingual/embed/{{mlmodel}}.log",
    benchmark:
        f"{BENCHMARKS}/multilingual/embed/{{mlmodel}}.tsv"
    params:
        config=CONFIG,
        settings=lambda w: {**config["multilingual"]["models"][w.mlmodel], "languages": config["multilingual"]["languages"],
                                    "evaluate": config["multilingual"]["evaluate"]},
        args=lambda w, input: ml_paths.embed_args(config, w.mlmodel, input),
    threads: 1
    priority: 30
    resources:
        mem_mb=mem_mb(3000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.multilingual.embed --config {params.config} --model {wildcards.mlmodel}"
        " {params.args} --features {input.features[0]} --eval-features {input.eval_features}"
        " --projections {input.projections} --out {output} > {log} 2>&1"


rule multilingual_align:
    input:
        code=code("multilingual.align", "multilingual.head", "multilingual.metrics", "multilingual.images",
                  "finetune/train", "evaluate/run"),
        embeddings=f"{ML}/embeddings/{{mlmodel}}.npz",
    output:
        sweep=f"{ML}/align/{{mlmodel}}/sweep.parquet",
        heads=f"{ML}/align/{{mlmodel}}/heads.npz",
        train_log=f"{ML}/align/{{mlmodel}}/log.jsonl",
    log:
        f"{LOGS}/multilingual/align/{{mlmodel}}.log",
    benchmark:
        f"{BENCHMARKS}/multilingual/align/{{mlmodel}}.tsv"
    params:
        config=CONFIG,
        settings={k: config["multilingual"][k] for k in ("align", "languages", "seed")},
        out_dir=lambda wildcards, output: os.path.dirname(output.sweep),
    threads: 1
    priority: 30
    resources:
        mem_mb=mem_mb(3000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.multilingual.align --config {params.config} --model {wildcards.mlmodel}"
        " --embeddings {input.embeddings} --out-dir {params.out_dir} > {log} 2>&1"


rule multilingual_evaluate:
    input:
        code=code("multilingual.evaluate", "multilingual.align", "multilingual.head", "multilingual.metrics",
                  "multilingual.diagnostics", "multilingual.images", "finetune/train", "evaluate/purity", "evaluate/run"),
        embeddings=f"{ML}/embeddings/{{mlmodel}}.npz",
        sweep=f"{ML}/align/{{mlmodel}}/sweep.parquet",
        heads=f"{ML}/align/{{mlmodel}}/heads.npz",
    output:
        metrics=f"{ML}/eval/{{mlmodel}}/metrics.parquet",
        gram=f"{ML}/eval/{{mlmodel}}/gram.parquet",
        per_query=f"{ML}/eval/{{mlmodel}}/per_query.npz",
    log:
        f"{LOGS}/multilingual/evaluate/{{mlmodel}}.log",
    benchmark:
        f"{BENCHMARKS}/multilingual/evaluate/{{mlmodel}}.tsv"
    params:
        config=CONFIG,
        settings={k: config["multilingual"][k] for k in ("evaluate", "languages")},
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    threads: 1
    priority: 30
    resources:
        mem_mb=mem_mb(3000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.multilingual.evaluate --config {params.config} --model {wildcards.mlmodel}"
        " --embeddings {input.embeddings} --sweep {input.sweep} --heads {input.heads}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule multilingual_report:
    input:
        code=code("multilingual.report", "multilingual.evaluate", "multilingual.align", "multilingual.images",
                  "report/aggregate", "common/intervals", "report/figures"),
        metrics=expand(f"{ML}/eval/{{mlmodel}}/metrics.parquet", mlmodel=ML_MODELS),
        gram=expand(f"{ML}/eval/{{mlmodel}}/gram.parquet", mlmodel=ML_MODELS),
        per_query=expand(f"{ML}/eval/{{mlmodel}}/per_query.npz", mlmodel=ML_MODELS),
        sweep=expand(f"{ML}/align/{{mlmodel}}/sweep.parquet", mlmodel=ML_MODELS),
    output:
        tables=[
            report(
                f"{TABLES}/multilingual_{t}.csv",
                caption=f"report/multilingual_{t}.rst",
                category=ML_CATEGORY,
                labels={"table": f"multilingual {t.replace('_', ' ')}"},
            )
            for t in ML_TABLES
        ],
        figures=[
            report(
                f"{FIGURES}/multilingual_{f}.svg",
                caption=f"report/multilingual_{f}_figure.rst",
                category=ML_CATEGORY,
                labels={"figure": f"multilingual {f}"},
            )
            for f in ML_FIGURES
        ],
        parquet=f"{TABLES}/multilingual_retrieval.parquet",
    log:
        f"{LOGS}/multilingual/report.log",
    benchmark:
        f"{BENCHMARKS}/multilingual/report.tsv"
    params:
        config=CONFIG,
        settings={k: config["multilingual"][k] for k in ("evaluate", "languages")},
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.multilingual.report --config {params.config} --metrics {input.metrics}"
        " --gram {input.gram} --per-query {input.per_query} --sweep {input.sweep}"
        " --tables {output.tables} --figures {output.figures} --parquet {output.parquet} > {log} 2>&1"


rule multilingual:
    input:
        ML_OUTPUTS,
