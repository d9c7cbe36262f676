# Evaluation: purity, zero-shot and diagnostics per checkpoint; Exp 2 pruning sweep on cached embeddings.

EVAL_CODE = code("evaluate", "evalsets", "zeroshot", "purity", "data", "models", "checkpoints")


def eval_inputs(wildcards):
    return [eval_set_input(s) for s in EVAL_SETS]


rule evaluate_pretrained:
    input:
        code=EVAL_CODE,
        checkpoint="results/pretrain/{model}/checkpoint.pt",
        sets=eval_inputs,
    output:
        metrics="results/eval/pretrained/{model}/metrics.parquet",
        purity="results/eval/pretrained/{model}/purity.parquet",
        neurons="results/eval/pretrained/{model}/neurons.npz",
        embeddings=expand(
            "results/eval/pretrained/{{model}}/embeddings/{evalset}.npz", evalset=EVAL_SETS
        ),
    log:
        "logs/evaluate/pretrained/{model}.log",
    benchmark:
        "benchmarks/evaluate/pretrained/{model}.tsv"
    params:
        config=CONFIG,
        settings=config["evaluate"],
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    threads: 1
    resources:
        gpu=0,
        mem_mb=mem_mb(3000),
        runtime=60,
    shell:
        "python -m workflow_scripts.evaluate --config {params.config} --model {wildcards.model}"
        " --checkpoint {input.checkpoint} --out-dir {params.out_dir} --tag kind=pretrained"
        " > {log} 2>&1"


rule evaluate_finetune:
    input:
        code=EVAL_CODE,
        checkpoint=finetune_dir() + "/checkpoint.pt",
        sets=eval_inputs,
    output:
        metrics="results/eval/" + finetune_dir().removeprefix("results/") + "/metrics.parquet",
        purity="results/eval/" + finetune_dir().removeprefix("results/") + "/purity.parquet",
        neurons="results/eval/" + finetune_dir().removeprefix("results/") + "/neurons.npz",
    log:
        "logs/evaluate/finetune/{model}/{strategy}/Cs{cs}/seed{seed}.log",
    params:
        config=CONFIG,
        settings=config["evaluate"],
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    threads: 1
    resources:
        gpu=0,
        mem_mb=mem_mb(3000),
        runtime=60,
    shell:
        "python -m workflow_scripts.evaluate --config {params.config} --model {wildcards.model}"
        " --checkpoint {input.checkpoint} --out-dir {params.out_dir} --tag kind=finetune"
        " --tag strategy={wildcards.strategy} --tag cs={wildcards.cs} --tag seed={wildcards.seed}"
        " > {log} 2>&1"


rule pruning_sweep:
    input:
        code=code("pruning", "zeroshot", "purity"),
        neurons="results/eval/pretrained/{model}/neurons.npz",
        checkpoint="results/pretrain/{model}/checkpoint.pt",
        embeddings=lambda wildcards: expand(
            "results/eval/pretrained/{model}/embeddings/{evalset}.npz",
            model=wildcards.model,
            evalset=PRUNING_SETS,
        ),
    output:
        "results/eval/pruning/{model}.parquet",
    log:
        "logs/pruning/{model}.log",
    benchmark:
        "benchmarks/pruning/{model}.tsv"
    params:
        config=CONFIG,
        settings=config["evaluate"]["pruning"],
    threads: 1
    resources:
        mem_mb=mem_mb(3000),
        runtime=60,
    shell:
        "python -m workflow_scripts.pruning --config {params.config} --model {wildcards.model}"
        " --checkpoint {input.checkpoint} --embeddings {input.embeddings} --out {output}"
        " > {log} 2>&1"
