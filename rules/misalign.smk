# Stage 1: caption neighbours (TF-IDF + exact top-K cosine), swaps per (strategy, Cs), training CSVs.
# seed_spec.md section 1; workflow_scripts/{similarity,misalign}.py.


rule caption_neighbours:
    input:
        code=MISALIGN_CODE,
        captions=config["data"]["captions"],
    output:
        f"{MISALIGN}/tfidf_neighbours.npz",
    log:
        "logs/caption_neighbours.log",
    benchmark:
        "benchmarks/caption_neighbours.tsv"
    params:
        config=CONFIG,
        settings={
            k: config["misalign"][k] for k in ("tfidf", "n_neighbours", "backend")
        },
    threads: 2
    resources:
        gpu=MISALIGN_GPU,
        mem_mb=mem_mb(4000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.similarity --config {params.config}"
        " --captions {input.captions} --out {output} --threads {threads} > {log} 2>&1"


rule misalign_swaps:
    input:
        code=MISALIGN_CODE,
        captions=config["data"]["captions"],
        neighbours=f"{MISALIGN}/tfidf_neighbours.npz",
    output:
        captions=expand(f"{MISALIGN}/{{{{strategy}}}}/Cs{{cs}}/captions.txt", cs=CS_LABELS),
        manifests=expand(f"{MISALIGN}/{{{{strategy}}}}/Cs{{cs}}/swaps.parquet", cs=CS_LABELS),
        summary=report(
            f"{MISALIGN}/{{strategy}}/summary.tsv",
            caption="report/swaps.rst",
            category="1. Data",
            subcategory="Misalignment",
            labels={"strategy": "{strategy}"},
        ),
    log:
        "logs/misalign_swaps/{strategy}.log",
    benchmark:
        "benchmarks/misalign_swaps/{strategy}.tsv"
    params:
        config=CONFIG,
        settings={
            k: config["misalign"][k] for k in ("cs_values", "top_k", "seed", "n_neighbours")
        },
        cs=" ".join(CS_LABELS),
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.misalign swap --config {params.config}"
        " --captions {input.captions} --neighbours {input.neighbours}"
        " --strategy {wildcards.strategy} --cs {params.cs}"
        " --out-captions {output.captions} --out-manifest {output.manifests}"
        " --summary {output.summary} --threads {threads} > {log} 2>&1"


rule misalign_csv:
    input:
        code=code("misalign", "captions", "data"),
        csv=config["data"]["train_csv"],
        captions=f"{MISALIGN}/{{strategy}}/Cs{{cs}}/captions.txt",
    output:
        f"{MISALIGN}/{{strategy}}/Cs{{cs}}/train.csv",
    log:
        "logs/misalign_csv/{strategy}/Cs{cs}.log",
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.misalign assemble --train-csv {input.csv}"
        " --captions {input.captions} --out {output} > {log} 2>&1"

