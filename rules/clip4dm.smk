# Seed 004, CLIP4DM: dense (word-level) misalignment detection from gradient attributions.
#   clip4dm_prepare    per model: the pack (text tower as tensors, tokenized captions, training pairs'
#                      attributions, epsilon calibrated on held-out aligned pairs, FOIL-style foil table)
#   clip4dm_detect     per (detector model, strategy, Cs, replicate): every line of the swapped set scored
#                      (truths: swapped / changed / contradicting), misaligned fraction estimated
#   (AP/AUROC of each set are computed from its scores by clip4dm_summary: one sklearn import, not 24)
#   clip4dm_localise   per model: FOIL-style localisation on held-out images (pretrained + its fine-tunes)
#   clip4dm_realdata   per (real benchmark, model), only when clip4dm.real_data names local files
#   clip4dm_summary    tables over replicates, figures and example captions for the report
# workflow_scripts/clip4dm/; docs/clip4dm.md.

from workflow_scripts.clip4dm import paths as c4_paths

C4 = f"{RESULTS}/clip4dm"
C4_SETTINGS = config["clip4dm"]
C4_CATEGORY = category("Dense misalignment (CLIP4DM)")
# the pretrained models (not the fine-tune arms' pseudo-models; the first pretraining of each, not its
# pretrain.seeds replicas) and the detectors among them
C4_MODELS = [m for m in TOWER_MODELS if m in FIRST_PRETRAINING_MODELS]
C4_DETECT = c4_paths.detector_models(config)
C4_FOILS = bool(config["world"]["enabled"] and config["data"]["heldout_csv"])
C4_CORE = (  # the modules every CLIP4DM job runs
    "clip4dm.pipeline", "clip4dm.token_table", "clip4dm.words", "clip4dm.attention", "clip4dm.tower",
    "clip4dm.attributions", "clip4dm.scores", "clip4dm.metrics", "models/clip",
)


rule clip4dm_prepare:
    input:
        unpack(lambda w: c4_paths.prepare_inputs(config, w.model, PRETRAINED, EVAL_FEATURES, FEATURE_CACHE,
                                                 TRUE_ATTRIBUTES)),
        code=code(*C4_CORE, "clip4dm.prepare", "clip4dm.foils", "finetune/features", "models/checkpoints", "world/synthetic",
                  "misalign/effective", "misalign/captions", "common/data", "evaluate/run"),
    output:
        pack=f"{C4}/{{model}}/pack.npz",
        calibration=f"{C4}/{{model}}/calibration.json",
    log:
        f"{LOGS}/clip4dm/prepare/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/prepare/{{model}}.tsv"
    params:
        config=CONFIG,
        settings=c4_paths.settings(config, "foils"),
        options=lambda w, input: c4_paths.prepare_options(input.get("cache"), TRUE_ATTRIBUTES),
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
        code=code(*C4_CORE, "clip4dm.detect", "misalign/effective", "world/synthetic", "misalign/captions", "report/aggregate"),
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
        settings=c4_paths.settings(config, "detect"),
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


rule clip4dm_localise:
    input:
        code=code(*C4_CORE, "clip4dm.localise", "clip4dm.prepare", "models/checkpoints"),
        pack=f"{C4}/{{model}}/pack.npz",
        finetuned=lambda w: [r[3] for r in c4_paths.finetunes(config, w.model, FINETUNE_RUNS, SEEDS, FINETUNE_DIR)],
    output:
        metrics=f"{C4}/{{model}}/localisation.parquet",
        foils=f"{C4}/{{model}}/foils.parquet",
    log:
        f"{LOGS}/clip4dm/localise/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/localise/{{model}}.tsv"
    params:
        config=CONFIG,
        settings=c4_paths.settings(config, "foils"),
        finetuned=lambda w: " ".join(
            ":".join(r) for r in c4_paths.finetunes(config, w.model, FINETUNE_RUNS, SEEDS, FINETUNE_DIR)
        ),
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


C4_REAL = c4_paths.real_runs(config)


rule clip4dm_realdata:
    input:
        unpack(lambda w: c4_paths.real_inputs(config, w.c4set)),
        code=code(*C4_CORE, "clip4dm.realdata", "clip4dm.readers", "common/data", "models/checkpoints", "common/distributed"),
        validated=VALIDATED["eval"],  # the benchmark's images, checked by validate_eval_images
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
        settings=lambda w: {**c4_paths.settings(config, "refclipscore"), "set": C4_SETTINGS["real_data"][w.c4set]},
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


C4_TABLE_LABELS = {
    "clip4dm_detection": "detection AP / AUROC",
    "clip4dm_rate": "estimated vs true misalignment rate",
    "clip4dm_localisation": "FOIL-style localisation",
    "clip4dm_calibration": "epsilon calibration",
    "clip4dm_real": "real benchmarks",
    "clip4dm_truncated": "captions cut to the context",
}
C4_FIGURE_LABELS = {
    "clip4dm_detection_auroc": "detection AUROC vs Cs",
    "clip4dm_detection_ap": "detection AP vs Cs",
    "clip4dm_rate": "estimated misalignment rate vs Cs",
    "clip4dm_localisation": "localisation accuracy per attribute",
    "clip4dm_examples": "example word attributions",
}
C4_REPORT = {
    **{f"table_{name}": report(f"{TABLES}/{name}.csv", caption=f"report/{name}.rst", category=C4_CATEGORY,
                               labels={"table": label}) for name, label in C4_TABLE_LABELS.items()},
    **{f"figure_{name}": report(f"{FIGURES}/{name}.png", caption=f"report/{name}_figure.rst",
                                category=C4_CATEGORY, labels={"figure": label})
       for name, label in C4_FIGURE_LABELS.items()},
}


rule clip4dm_summary:
    input:
        code=code("clip4dm.summarise", "clip4dm.render", "clip4dm.detect", "clip4dm.metrics", "common/intervals", "report/figures",
                  "common/data", "report/aggregate"),
        detect=C4_DETECT_RUNS,
        scores=[p.replace("metrics.json", "scores.parquet") for p in C4_DETECT_RUNS],
        localisation=expand(f"{C4}/{{model}}/localisation.parquet", model=C4_MODELS) if C4_FOILS else [],
        foils=expand(f"{C4}/{{model}}/foils.parquet", model=C4_MODELS) if C4_FOILS else [],
        calibration=expand(f"{C4}/{{model}}/calibration.json", model=C4_MODELS),
        real=[f"{C4}/{m}/real/{s}/metrics.json" for s, m in C4_REAL],
        misalign=f"{MISALIGN}/summary.parquet",
    output:
        **C4_REPORT,
        parquet=expand(f"{TABLES}/{{name}}.parquet", name=C4_TABLE_LABELS),
        svg=expand(f"{FIGURES}/{{name}}.svg", name=C4_FIGURE_LABELS),
    log:
        f"{LOGS}/clip4dm/summary.log",
    benchmark:
        f"{BENCHMARKS}/clip4dm/summary.tsv"
    params:
        examples=C4_SETTINGS["examples"],
        tables=lambda w, output: os.path.dirname(output.table_clip4dm_detection),
        figures=lambda w, output: os.path.dirname(output.figure_clip4dm_examples),
        real=lambda wildcards, input: f"--real {' '.join(input.real)}" if input.real else "",
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=20,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.clip4dm.summarise --detect {input.detect} --scores {input.scores}"
        " --localisation {input.localisation} --foils {input.foils} --calibration {input.calibration}"
        " {params.real} --misalign {input.misalign} --tables-dir {params.tables} --figures-dir {params.figures}"
        " --examples {params.examples} > {log} 2>&1"


if C4_SETTINGS["enabled"]:
    SYSTEM_TARGETS.extend([f"{TABLES}/{n}.csv" for n in C4_TABLE_LABELS] + [f"{FIGURES}/{n}.png" for n in C4_FIGURE_LABELS])
