# Stage 1: caption neighbours (TF-IDF + exact top-K cosine), swaps per (strategy, Cs, replicate), training
# CSVs, and the swap summary with the effective misalignment of every set.
# docs/original_code.md, "Exp 3, stage 1"; workflow_scripts/{similarity,misalign,effective}.py.


rule caption_neighbours:
    input:
        code=MISALIGN_CODE,
        captions=config["data"]["captions"],
        validated=VALIDATED["text"],
    output:
        f"{MISALIGN}/tfidf_neighbours.npz",
    log:
        f"{LOGS}/caption_neighbours.log",
    benchmark:
        f"{BENCHMARKS}/caption_neighbours.tsv"
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
        "python -m workflow_scripts.misalign.similarity --config {params.config}"
        " --captions {input.captions} --out {output} --threads {threads} > {log} 2>&1"


# One job per (strategy, Cs, replicate): the swap loop runs to that Cs's target (the pairs of a smaller Cs
# are a prefix of a larger one's for the same seed), so adding a Cs or a replicate runs only its own jobs.
# It also writes the set's training CSV (image paths of data.train_csv + the swapped captions).
rule misalign_swaps:
    input:
        code=MISALIGN_CODE,
        captions=config["data"]["captions"],
        neighbours=f"{MISALIGN}/tfidf_neighbours.npz",
        csv=config["data"]["train_csv"],
        validated=VALIDATED["text"],
    output:
        captions=f"{SWAPS_DIR}/captions.txt",
        manifest=f"{SWAPS_DIR}/swaps.parquet",
        summary=f"{SWAPS_DIR}/summary.tsv",
        csv=f"{SWAPS_DIR}/train.csv",
    log:
        f"{LOGS}/misalign_swaps/{{strategy}}/Cs{{cs}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/misalign_swaps/{{strategy}}/Cs{{cs}}/seed{{seed}}.tsv"
    wildcard_constraints:
        strategy="|".join(STRATEGIES),
    params:
        config=CONFIG,
        settings={k: config["misalign"][k] for k in ("top_k", "seed", "n_neighbours")},
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.misalign.swap swap --config {params.config}"
        " --captions {input.captions} --neighbours {input.neighbours}"
        " --strategy {wildcards.strategy} --cs {wildcards.cs} --replicate {wildcards.seed}"
        " --out-captions {output.captions} --out-manifest {output.manifest}"
        " --summary {output.summary} --train-csv {input.csv} --out-csv {output.csv}"
        " --threads {threads} > {log} 2>&1"


rule misalign_summary:
    input:
        code=code("misalign/effective", "world/synthetic", "misalign/captions", "common/data"),
        captions=config["data"]["captions"],
        attributes=TRUE_ATTRIBUTES,
        swapped=swapped_sets(),
        summaries=swapped_sets("summary.tsv"),
    output:
        table=f"{MISALIGN}/summary.parquet",
        tsv=report(
            f"{MISALIGN}/summary.tsv",
            caption="report/swaps.rst",
            category=category("Data"),
            subcategory="Misalignment",
            labels={"table": "nominal and effective misalignment"},
        ),
    log:
        f"{LOGS}/misalign_summary.log",
    params:
        swapped=lambda wildcards, input: " ".join(
            f"{strategy}:{cs}:{seed}:{path}"
            for (strategy, cs, seed), path in zip(SWAPPED_KEYS, input.swapped)
        ),
        attributes=lambda wildcards, input: (
            f"--attributes {input.attributes}" if input.attributes else ""
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.misalign.effective --captions {input.captions} {params.attributes}"
        " --swapped {params.swapped} --summaries {input.summaries}"
        " --out {output.table} {output.tsv} > {log} 2>&1"
