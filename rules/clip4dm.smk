# Seed 004, CLIP4DM: dense (word-level) misalignment detection from gradient attributions.
#   clip4dm_prepare    per model: the pack (text tower as tensors, tokenized captions, training pairs'
#                      attributions, epsilon calibrated on held-out aligned pairs, FOIL-style foil table)
#   clip4dm_detect     per (detector model, strategy, Cs, replicate): every line of the swapped set scored,
#                      AP/AUROC for swapped / changed / contradicting lines, misaligned fraction estimated
#   clip4dm_localise   per model: FOIL-style localisation on held-out images (pretrained + its fine-tunes)
#   clip4dm_realdata   per (real benchmark, model), only when clip4dm.real_data names local files
#   clip4dm_summary    tables over replicates, figures and example captions for the report
# workflow_scripts/clip4dm/; README "Dense misalignment detection (CLIP4DM)".

C4 = f"{RESULTS}/clip4dm"
C4_SETTINGS = config["clip4dm"]
C4_CATEGORY = "6. Dense misalignment (CLIP4DM)"
# the pretrained models (not the fine-tune arms' pseudo-models) and the detectors among them
C4_MODELS = [m for m in MODELS if "finetune_of" not in config["models"][m]]
C4_DETECT = C4_SETTINGS["detect"]["models"] or list(
    dict.fromkeys(config["models"][m].get("finetune_of", m) for m in FT_MODELS)
)
C4_FOILS = bool(config["world"]["enabled"] and config["data"]["heldout_csv"])
C4_CORE = code(
    "clip4dm.pipeline", "clip4dm.words", "clip4dm.attention", "clip4dm.tower",
    "clip4dm.attributions", "clip4dm.scores", "clip4dm.metrics", "models",
)
C4_ATTRIBUTION_KEYS = ("template", "layers", "batch_size", "long_captions", "epsilon")


def c4_settings(*extra):
    return {k: C4_SETTINGS[k] for k in C4_ATTRIBUTION_KEYS + extra}


def c4_prepare_inputs(wildcards):
    inputs = {"checkpoint": PRETRAINED.format(model=wildcards.model),
              "features": EVAL_FEATURES.format(model=wildcards.model)}
    if config["data"]["heldout_csv"]:
        inputs["heldout"] = config["data"]["heldout_csv"]
    if wildcards.model in C4_DETECT:
        inputs["cache"] = FEATURE_CACHE["index"].format(model=wildcards.model)
        inputs["cache_arrays"] = [FEATURE_CACHE[k].format(model=wildcards.model) for k in ("image", "text")]
        inputs["captions"] = config["data"]["captions"]
        inputs["attributes"] = TRUE_ATTRIBUTES
    return inputs


def c4_prepare_options(wildcards, input):
    if wildcards.model not in C4_DETECT:
        return ""
    options = f"--detector --cache {input.cache}"
    return options + (f" --attributes {input.attributes}" if TRUE_ATTRIBUTES else "")


rule clip4dm_prepare:
    input:
        unpack(c4_prepare_inputs),
        code=C4_CORE + code("clip4dm.prepare", "clip4dm.foils", "features", "checkpoints", "world",
                            "effective", "captions", "data", "evaluate"),
    output:
        pack=f"{C4}/{{model}}/pack.npz",
        calibration=f"{C4}/{{model}}/calibration.json",
    log:
        f"{LOGS}/clip4dm/prepare/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/prepare/{{model}}.tsv"
    params:
        config=CONFIG,
        settings=c4_settings("foils"),
        detector=lambda wildcards: wildcards.model in C4_DETECT,
        options=c4_prepare_options,
    threads: 1
    resources:
        mem_mb=mem_mb(3000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.clip4dm.prepare --config {params.config}"
        " --model {wildcards.model} --checkpoint {input.checkpoint} --eval-features {input.features}"
        " {params.options} --out {output.pack} --calibration {output.calibration} > {log} 2>&1"


rule clip4dm_detect:
    input:
        code=C4_CORE + code("clip4dm.detect", "effective", "world", "captions"),
        pack=f"{C4}/{{model}}/pack.npz",
        captions=f"{SWAPS_DIR}/captions.txt",
        manifest=f"{SWAPS_DIR}/swaps.parquet",
        original=config["data"]["captions"],
        attributes=TRUE_ATTRIBUTES,
    output:
        metrics=f"{C4}/{{model}}/detect/{{strategy}}/Cs{{cs}}/seed{{seed}}/metrics.json",
        scores=f"{C4}/{{model}}/detect/{{strategy}}/Cs{{cs}}/seed{{seed}}/scores.parquet",
    log:
        f"{LOGS}/clip4dm/detect/{{model}}/{{strategy}}/Cs{{cs}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/detect/{{model}}/{{strategy}}/Cs{{cs}}/seed{{seed}}.tsv"
    wildcard_constraints:
        strategy="|".join(STRATEGIES),
    params:
        config=CONFIG,
        settings=c4_settings("detect"),
        attributes=lambda wildcards, input: f"--attributes {input.attributes}" if input.attributes else "",
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=20,
    conda:
        "../envs/workflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.clip4dm.detect --config {params.config}"
        " --pack {input.pack} --captions {input.captions} --original {input.original}"
        " --manifest {input.manifest} {params.attributes} --model {wildcards.model}"
        " --strategy {wildcards.strategy} --cs {wildcards.cs} --replicate {wildcards.seed}"
        " --out-metrics {output.metrics} --out-scores {output.scores} > {log} 2>&1"


def c4_finetunes(model):
    """(label, Cs, replicate, checkpoint) of every fine-tune whose pretrained model is `model`."""
    if not C4_SETTINGS["foils"]["finetuned"]:
        return []
    runs = []
    for ft in FT_MODELS:
        if config["models"][ft].get("finetune_of", ft) != model:
            continue
        for strategy, cs in FINETUNE_RUNS:
            label = strategy if ft == model else f"{ft}.{strategy}"
            for seed in SEEDS:
                path = FINETUNE_DIR.format(model=ft, strategy=strategy, cs=cs, seed=seed) + "/checkpoint.pt"
                runs.append((label, cs, seed, path))
    return runs


rule clip4dm_localise:
    input:
        code=C4_CORE + code("clip4dm.localise", "clip4dm.prepare", "checkpoints"),
        pack=f"{C4}/{{model}}/pack.npz",
        finetuned=lambda wildcards: [r[3] for r in c4_finetunes(wildcards.model)],
    output:
        metrics=f"{C4}/{{model}}/localisation.parquet",
        foils=f"{C4}/{{model}}/foils.parquet",
    log:
        f"{LOGS}/clip4dm/localise/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/localise/{{model}}.tsv"
    params:
        config=CONFIG,
        settings=c4_settings("foils"),
        finetuned=lambda wildcards: " ".join(":".join(r) for r in c4_finetunes(wildcards.model)),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.clip4dm.localise --config {params.config}"
        " --pack {input.pack} --model {wildcards.model} --finetuned {params.finetuned}"
        " --out-metrics {output.metrics} --out-foils {output.foils} > {log} 2>&1"


C4_REAL = [
    (name, model)
    for name, spec in C4_SETTINGS["real_data"].items()
    for model in (spec.get("models") or C4_DETECT)
]


rule clip4dm_realdata:
    input:
        code=C4_CORE + code("clip4dm.realdata", "clip4dm.readers", "data", "checkpoints", "distributed"),
        json=lambda wildcards: C4_SETTINGS["real_data"][wildcards.c4set]["json"],
        checkpoint=PRETRAINED,
        pack=f"{C4}/{{model}}/pack.npz",
    output:
        metrics=f"{C4}/{{model}}/real/{{c4set}}/metrics.json",
        samples=f"{C4}/{{model}}/real/{{c4set}}/samples.parquet",
    log:
        f"{LOGS}/clip4dm/realdata/{{model}}/{{c4set}}.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/realdata/{{model}}/{{c4set}}.tsv"
    wildcard_constraints:
        c4set="|".join(C4_SETTINGS["real_data"]) or "_none_",
    params:
        config=CONFIG,
        settings=lambda wildcards: {**c4_settings(), "set": C4_SETTINGS["real_data"][wildcards.c4set]},
    threads: 2
    resources:
        mem_mb=mem_mb(6000),
        runtime=120,
    conda:
        "../envs/workflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.clip4dm.realdata --config {params.config}"
        " --set {wildcards.c4set} --model {wildcards.model} --checkpoint {input.checkpoint}"
        " --pack {input.pack} --out-metrics {output.metrics} --out-samples {output.samples} > {log} 2>&1"


C4_DETECT_RUNS = [
    f"{C4}/{m}/detect/{s}/Cs{c}/seed{r}/metrics.json" for m in C4_DETECT for s, c, r in SWAPPED_KEYS
]
C4_TABLES = ["clip4dm_detection", "clip4dm_rate", "clip4dm_localisation", "clip4dm_calibration", "clip4dm_real"]
C4_FIGURES = ["clip4dm_detection_auroc", "clip4dm_detection_ap", "clip4dm_rate", "clip4dm_localisation",
              "clip4dm_examples"]


def c4_table(name, label):
    return report(f"{TABLES}/{name}.csv", caption=f"report/{name}.rst", category=C4_CATEGORY,
                  labels={"table": label})


def c4_figure(name, label):
    return report(f"{FIGURES}/{name}.png", caption=f"report/{name}_figure.rst", category=C4_CATEGORY,
                  labels={"figure": label})


rule clip4dm_summary:
    input:
        code=code("clip4dm.summarise", "clip4dm.render", "intervals", "figures"),
        detect=C4_DETECT_RUNS,
        localisation=expand(f"{C4}/{{model}}/localisation.parquet", model=C4_MODELS) if C4_FOILS else [],
        foils=expand(f"{C4}/{{model}}/foils.parquet", model=C4_MODELS) if C4_FOILS else [],
        calibration=expand(f"{C4}/{{model}}/calibration.json", model=C4_MODELS),
        real=[f"{C4}/{m}/real/{s}/metrics.json" for s, m in C4_REAL],
        misalign=f"{MISALIGN}/summary.parquet",
    output:
        detection=c4_table("clip4dm_detection", "detection AP / AUROC"),
        rate=c4_table("clip4dm_rate", "estimated vs true misalignment rate"),
        localisation=c4_table("clip4dm_localisation", "FOIL-style localisation"),
        calibration=c4_table("clip4dm_calibration", "epsilon calibration"),
        real_table=c4_table("clip4dm_real", "real benchmarks"),
        parquet=expand(f"{TABLES}/{{name}}.parquet", name=C4_TABLES),
        figures=[
            c4_figure("clip4dm_detection_auroc", "detection AUROC vs Cs"),
            c4_figure("clip4dm_detection_ap", "detection AP vs Cs"),
            c4_figure("clip4dm_rate", "estimated misalignment rate vs Cs"),
            c4_figure("clip4dm_localisation", "localisation accuracy per attribute"),
            c4_figure("clip4dm_examples", "example word attributions"),
        ],
        svg=expand(f"{FIGURES}/{{name}}.svg", name=C4_FIGURES),
    log:
        f"{LOGS}/clip4dm/summary.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/summary.tsv"
    params:
        examples=C4_SETTINGS["examples"],
        tables=TABLES,
        figures=FIGURES,
        real=lambda wildcards, input: f"--real {' '.join(input.real)}" if input.real else "",
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=20,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.clip4dm.summarise --detect {input.detect}"
        " --localisation {input.localisation} --foils {input.foils} --calibration {input.calibration}"
        " {params.real} --misalign {input.misalign} --tables-dir {params.tables} --figures-dir {params.figures}"
        " --examples {params.examples} > {log} 2>&1"


if C4_SETTINGS["enabled"]:
    SYSTEM_TARGETS.extend([f"{TABLES}/{n}.csv" for n in C4_TABLES] + [f"{FIGURES}/{n}.png" for n in C4_FIGURES])
